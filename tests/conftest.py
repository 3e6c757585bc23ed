"""Shared fixtures: real image files made by the tests (Pillow encoders), and tiny labelled datasets."""

import contextlib
import io
import socket
import struct
import subprocess
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.common.settings import S3Settings, Settings


def encode(fmt: str, size: tuple[int, int] = (64, 48), seed: int = 0, mode: str = "RGB", **save: object) -> bytes:
    """A real image file of ``fmt`` (JPEG, PNG, WEBP, GIF, TIFF, BMP) with random content from ``seed``."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    img = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` but holds almost no data: a decompression bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


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


def wait_until_up(process: subprocess.Popen[bytes], log: Path, *urls: str, seconds: float, poll: float) -> None:
    """Return once every URL answers 2xx; fail with the process's log when it exits or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            for url in urls:
                urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:  # refused, reset, or an HTTP error (not ready yet)
            assert process.poll() is None, log.read_text()
            time.sleep(poll)
    raise TimeoutError(log.read_text())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def s3_server() -> Iterator[S3Settings]:
    """A real S3-protocol server (moto) on a free loopback port; it accepts any credentials."""
    with empty_s3_server() as settings:
        yield settings


@contextlib.contextmanager
def empty_s3_server() -> Iterator[S3Settings]:
    """A moto S3 server on a free loopback port, emptied first: moto keeps buckets per process, across servers, so
    an earlier test's records would otherwise show up in this one's bucket."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    reset = urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/reset", method="POST")
    with urllib.request.urlopen(reset, timeout=10):
        pass
    yield S3Settings(endpoint=f"127.0.0.1:{port}", access_key="test-access", secret_key="test-secret")
    server.stop()
