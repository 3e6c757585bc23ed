"""Shared fixtures: settings in the test's folder, tiny labelled datasets, an empty S3 server. What the tests share
besides fixtures lives in ``tests.helpers``."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from components.common.settings import S3Settings, Settings
from tests.helpers.images import encode
from tests.helpers.servers import empty_s3_server


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Default settings with the data folder (ingest cache) inside the test's temp folder."""
    return Settings(data_dir=tmp_path / "data")


MakeTree = Callable[..., Path]


@pytest.fixture
def make_tree(tmp_path: Path) -> MakeTree:
    """Write a class-folder tree: ``make_tree({"real": 30, "ai_generated": 30})`` or with split folders
    ``make_tree({"train/REAL": 20, "test/FAKE": 5})``. Each image is a distinct random PNG (48x48 by default)."""
    counter = iter(range(1_000_000))

    def make(layout: dict[str, int], root: str = "src", fmt: str = "PNG", size: tuple[int, int] = (48, 48)) -> Path:
        base = tmp_path / root
        for folder, count in layout.items():
            target = base / folder
            target.mkdir(parents=True, exist_ok=True)
            for _ in range(count):
                n = next(counter)
                (target / f"img{n:05d}.{fmt.lower()}").write_bytes(encode(fmt, size, seed=n))
        return base

    return make


@pytest.fixture
def s3_server() -> Iterator[S3Settings]:
    """A real S3-protocol server (moto) on a free loopback port; it accepts any credentials."""
    with empty_s3_server() as settings:
        yield settings
