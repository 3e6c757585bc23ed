"""Reading a dataset's images (``common.dataset_files``) from real folders: copied and by reference, a source changed
or gone since ingest, and batches read in parallel that equal the one-by-one path. S3 is in
tests/integration/test_dataset_by_reference.py."""

import hashlib
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from components.common.dataset_files import DatasetImages, ImageRef, image_refs
from components.common.errors import DataSourceError
from components.common.loaders import EvalImages, collate_crops
from components.common.seeding import seed_everything, seed_worker
from components.common.settings import ImageLimits, Settings
from components.common.transforms import Augmentation, Preprocessing
from components.ingest import ingest_dataset
from components.train import TrainImages, TrainItem
from tests.conftest import MakeTree
from tests.helpers.spawn import in_spawned_child

PREP = Preprocessing(image_size=32, max_crops=4)


def _by_reference(settings: Settings, src: Path, out: Path) -> DatasetImages:
    ingest_dataset(str(src), out, settings.data_dir / "cache", settings.splits, settings.s3, by_reference=True)
    return DatasetImages(out)


def test_images_by_reference_read_as_their_sources(make_tree: MakeTree, settings: Settings, tmp_path: Path) -> None:
    src = make_tree({"real": 4, "ai_generated": 4})
    images = _by_reference(settings, src, tmp_path / "ds")
    manifest = images.manifest()
    rows = list(manifest.itertuples(index=False))
    assert [images.read(row) for row in rows] == [Path(row.ref).read_bytes() for row in rows]
    assert images.read_batch(rows) == [Path(row.ref).read_bytes() for row in rows]
    assert list(images.read_each(rows, lambda data: hashlib.sha256(data).hexdigest())) == list(manifest["sha256"])


def _grow(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\0")


def _touch(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (_grow, "changed since it was ingested"),  # other content, another size
        (_touch, "changed since it was ingested"),  # the same size, rewritten later (another mtime)
        (Path.unlink, "is missing"),  # deleted
    ],
)
def test_a_changed_or_missing_source_is_refused_by_name(
    make_tree: MakeTree, settings: Settings, tmp_path: Path, change: Callable[[Path], object], says: str
) -> None:
    src = make_tree({"real": 2, "ai_generated": 2})
    images = _by_reference(settings, src, tmp_path / "ds")
    row = next(images.manifest().itertuples(index=False))
    change(Path(row.ref))
    with pytest.raises(DataSourceError, match=f"{row.ref} {says}.*ingest the source again"):
        images.read(row)
    [outcome] = images.read_each([row], len)
    assert isinstance(outcome, DataSourceError)


def test_a_copied_image_gone_from_the_dataset_folder_is_named(
    make_tree: MakeTree, settings: Settings, tmp_path: Path
) -> None:
    src = make_tree({"real": 2, "ai_generated": 2})
    ingest_dataset(str(src), tmp_path / "ds", settings.data_dir / "cache", settings.splits, settings.s3)
    images = DatasetImages(tmp_path / "ds")
    rows = list(images.manifest().itertuples(index=False))
    (tmp_path / "ds" / rows[1].path).unlink()
    with pytest.raises(DataSourceError, match=f"{tmp_path / 'ds' / rows[1].path} is missing"):
        images.read_batch(rows)


def test_rows_of_a_manifest_from_before_references_read_as_copies() -> None:
    assert image_refs(pd.DataFrame({"path": ["images/a.png"], "label": ["real"]})) == [ImageRef("images/a.png")]


def test_the_reader_pickles_without_its_pool_and_reads_after(
    make_tree: MakeTree, settings: Settings, tmp_path: Path
) -> None:
    images = _by_reference(settings, make_tree({"real": 2, "ai_generated": 2}), tmp_path / "ds")
    rows = list(images.manifest().itertuples(index=False))
    before = images.read_batch(rows)  # this process's thread pool now exists
    copy = pickle.loads(pickle.dumps(images))
    assert copy.read_batch(rows) == before


class OneByOne(TorchDataset[TrainItem]):
    """The same images without ``__getitems__``: the DataLoader fetches them one ``__getitem__`` after another."""

    def __init__(self, images: TrainImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> TrainItem:
        return self.images[index]


def _batches(location: str, one_by_one: bool, workers: int) -> list[list[np.ndarray]]:
    """The training batches of the dataset at ``location``, its images fetched a batch at a time (in parallel) or
    one by one; with ``workers`` forked DataLoader workers (run by ``in_spawned_child``: ``tests.helpers.spawn``)."""
    images = DatasetImages(location)
    images.read_batch(list(images.manifest().itertuples(index=False))[:2])  # this process's thread pool exists
    train = TrainImages(images, images.manifest(), ImageLimits(), PREP, Augmentation(rescale_prob=0.5, flip=True))
    generator = seed_everything(11)
    loader = DataLoader(OneByOne(train) if one_by_one else train, batch_size=4, shuffle=True, generator=generator,
                        num_workers=workers, worker_init_fn=seed_worker)  # fmt: skip
    return [[tensor.numpy() for tensor in batch] for batch in loader]


@pytest.mark.parametrize("workers", [0, 1])
def test_batches_read_in_parallel_equal_the_one_by_one_path(
    make_tree: MakeTree, settings: Settings, tmp_path: Path, workers: int
) -> None:
    src = make_tree({"real": 6, "ai_generated": 6}, size=(56, 44))
    _by_reference(settings, src, tmp_path / "ds")
    location = str(tmp_path / "ds")
    parallel = in_spawned_child(_batches, location, False, workers)
    one_by_one = in_spawned_child(_batches, location, True, workers)
    assert len(parallel) == 3
    for got, expected in zip(parallel, one_by_one, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def test_evaluation_batches_read_in_parallel_equal_the_one_by_one_path(
    make_tree: MakeTree, settings: Settings, tmp_path: Path
) -> None:
    images = _by_reference(settings, make_tree({"real": 3, "ai_generated": 3}, size=(70, 40)), tmp_path / "ds")
    crops = EvalImages(images, images.manifest(), ImageLimits(), PREP)
    batched = collate_crops(crops.__getitems__(list(range(len(crops)))))
    single = collate_crops([crops[i] for i in range(len(crops))])
    assert batched[1] == single[1]
    assert torch.equal(batched[0], single[0])
    assert torch.equal(batched[2], single[2])
