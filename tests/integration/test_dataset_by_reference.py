"""Datasets by reference to S3 objects, and datasets whose location is an S3 prefix, against a real S3 server (moto)
on loopback: ingest, reading with If-Match, objects changed or gone since ingest, validate, training batches."""

import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from torch.utils.data import DataLoader

from components.common.dataset import read_manifest
from components.common.dataset_files import DatasetImages
from components.common.errors import DataSourceError
from components.common.seeding import seed_everything, seed_worker
from components.common.settings import ImageLimits, S3Settings, Settings, ValidationRules
from components.common.transforms import Augmentation, Preprocessing
from components.ingest import IngestResult, ingest_dataset
from components.train import TrainImages
from components.validate import validate_dataset
from tests.conftest import MakeTree
from tests.helpers.images import encode
from tests.helpers.servers import upload_folder
from tests.helpers.spawn import in_spawned_child

pytestmark = pytest.mark.integration

SOURCE = "s3://photos/batch-1"
LAYOUT = {f"{split}/{label}": n for split, n in (("train", 6), ("val", 3), ("test", 3)) for label in ("real", "fake")}


def _ingest(settings: Settings, source: str, out: Path, by_reference: bool) -> IngestResult:
    cache = settings.data_dir / "cache"
    return ingest_dataset(source, out, cache, settings.splits, settings.s3, by_reference=by_reference)


@pytest.fixture
def photos(make_tree: MakeTree, s3_server: S3Settings, tmp_path: Path) -> Settings:
    """``LAYOUT`` uploaded below ``SOURCE``; settings that reach the server, the ingest cache in the test's folder."""
    upload_folder(s3_server, make_tree(LAYOUT), "photos", "batch-1")
    return Settings(data_dir=tmp_path / "data", s3=s3_server)


def test_ingest_of_s3_by_reference_copies_nothing_and_reads_the_objects(photos: Settings, tmp_path: Path) -> None:
    referenced = _ingest(photos, SOURCE, tmp_path / "ref", by_reference=True)
    again = _ingest(photos, SOURCE, tmp_path / "again", by_reference=True)
    copied = _ingest(photos, SOURCE, tmp_path / "copy", by_reference=False)
    assert not (tmp_path / "ref" / "images").exists()
    assert (referenced.bytes_read, again.bytes_read) == (copied.bytes_read, 0)  # the copy reads them once more
    assert referenced.summary.dataset_version == again.summary.dataset_version == copied.summary.dataset_version
    assert referenced.summary.by_reference
    images = DatasetImages(tmp_path / "ref", photos.s3)
    manifest = images.manifest()
    assert manifest["ref"].str.startswith(f"{SOURCE}/").all()
    assert (manifest["ref_check"].str.len() == 32).all()  # an MD5 ETag per object
    rows = list(manifest.itertuples(index=False))
    assert [hashlib.sha256(data).hexdigest() for data in images.read_batch(rows)] == list(manifest["sha256"])


def _overwrite(client: Any, key: str) -> None:
    data = encode("PNG", (48, 48), seed=777)
    client.put_object("photos", key, io.BytesIO(data), len(data))


def _remove(client: Any, key: str) -> None:
    client.remove_object("photos", key)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (_overwrite, "changed since it was ingested"),  # another ETag: the store refuses the If-Match GET
        (_remove, "is missing"),  # deleted
    ],
)
def test_an_object_changed_or_gone_since_ingest_is_refused_by_name(
    photos: Settings, tmp_path: Path, change: Callable[[Any, str], None], says: str
) -> None:
    _ingest(photos, SOURCE, tmp_path / "ds", by_reference=True)
    images = DatasetImages(tmp_path / "ds", photos.s3)
    rows = list(images.manifest().itertuples(index=False))
    assert validate_dataset(images, photos.images, ValidationRules(min_images_per_split=6)).passed
    change(photos.s3.client(), rows[0].ref.removeprefix("s3://photos/"))
    with pytest.raises(DataSourceError, match=f"{rows[0].ref} {says}.*ingest the source again"):
        images.read_batch(rows)
    report = validate_dataset(images, photos.images, ValidationRules(min_images_per_split=6))
    [finding] = report.errors
    assert (finding.rule, finding.files) == ("decodes", [rows[0].ref])
    assert says in finding.message


def test_a_reader_without_s3_settings_says_what_it_needs(photos: Settings, tmp_path: Path) -> None:
    _ingest(photos, SOURCE, tmp_path / "ds", by_reference=True)
    images = DatasetImages(tmp_path / "ds")
    row = next(images.manifest().itertuples(index=False))
    with pytest.raises(DataSourceError, match=f"{row.ref} is on S3 but its reader was given no S3 settings"):
        images.read(row)


@pytest.mark.parametrize("scheme", ["s3", "minio"])  # minio://: the URI KFP gives an artifact
@pytest.mark.parametrize("by_reference", [False, True])
def test_a_dataset_at_an_s3_prefix_reads_like_its_folder(
    photos: Settings, tmp_path: Path, scheme: str, by_reference: bool
) -> None:
    _ingest(photos, SOURCE, tmp_path / "ds", by_reference=by_reference)
    upload_folder(photos.s3, tmp_path / "ds", "datasets", "runs/ds")
    local, remote = DatasetImages(tmp_path / "ds", photos.s3), DatasetImages(f"{scheme}://datasets/runs/ds", photos.s3)
    manifest = remote.manifest()
    assert manifest.equals(read_manifest(tmp_path / "ds"))
    assert manifest.equals(read_manifest(f"{scheme}://datasets/runs/ds/", photos.s3))
    rows = list(manifest.itertuples(index=False))
    assert remote.read_batch(rows) == local.read_batch(rows)
    assert validate_dataset(remote, photos.images, ValidationRules(min_images_per_split=6)).passed


def _batches(location: str, s3: S3Settings | None) -> list[list[np.ndarray]]:
    """The training batches of the dataset at ``location``, read by one forked DataLoader worker after this process
    made an S3 client of its own (which the worker must not share); run in a spawned child (tests.helpers.spawn)."""
    images = DatasetImages(location, s3)
    images.read_batch(list(images.manifest().itertuples(index=False))[:2])  # a client in this process first
    prep, aug = Preprocessing(image_size=32, max_crops=4), Augmentation(rescale_prob=0.5)
    rows = images.manifest().query("split == 'train'")
    generator = seed_everything(5)
    train = TrainImages(images, rows, ImageLimits(), prep, aug)
    loader = DataLoader(train, batch_size=4, shuffle=True, generator=generator, num_workers=1,
                        worker_init_fn=seed_worker)  # fmt: skip
    return [[tensor.numpy() for tensor in batch] for batch in loader]


def test_training_batches_from_s3_objects_equal_those_of_the_copied_dataset(photos: Settings, tmp_path: Path) -> None:
    _ingest(photos, SOURCE, tmp_path / "ref", by_reference=True)
    _ingest(photos, SOURCE, tmp_path / "copy", by_reference=False)
    from_s3, from_disk = (
        in_spawned_child(_batches, str(tmp_path / "ref"), photos.s3),
        in_spawned_child(_batches, str(tmp_path / "copy"), None),
    )
    assert len(from_s3) == 3
    for got, expected in zip(from_s3, from_disk, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
