"""The dataset contract between ingest and every later stage: a folder of images plus a Parquet manifest.

Layout of an ingested dataset folder (a local folder, or an ``s3://bucket/prefix`` it was copied to)::

    manifest.parquet          one row per image (columns: MANIFEST_COLUMNS)
    dataset.json              {"dataset_version": ..., "num_images": ..., "counts": ..., "by_reference": ...}
    images/<sha[:2]>/<sha>.<ext>

A dataset by reference has no ``images/``: each row's ``ref`` names the source object (an absolute local path or
``s3://bucket/key``) and ``ref_check`` how to recognise it unchanged (``size:mtime_ns`` of a file, the ETag of an
object). Its ``path`` is still the name a copy would have, so a referenced dataset has its copied twin's version.
``common.dataset_files`` reads the images of either kind.

The dataset version is a hash of the manifest's content (not of its file bytes, which depend on the Parquet
writer) and travels in the metadata of every artifact made from the dataset.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from components.common.s3 import is_s3_uri, parse_uri, read_recorded, store_client
from components.common.settings import S3Settings, SplitSettings

LABELS = ("real", "ai_generated")
SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ["sha256", "label", "split", "generator", "path", "source", "format", "width", "height", "bytes",
                    "ref", "ref_check"]  # fmt: skip
# Columns whose values define the dataset; `source`, `ref` and `ref_check` (where a file came from, where it is
# read) do not change the version.
_VERSION_COLUMNS = ["sha256", "label", "split", "generator", "path", "format", "width", "height", "bytes"]
# Columns added after the first manifests were written, with the value older manifests stand for. `generator`:
# the generator of an ai_generated image when the source says it (``ai_generated/<generator>/``), else "".
# `ref`, `ref_check`: the source object a dataset by reference reads and its recorded version; "" for a copy.
_LATER_COLUMNS = {"generator": "", "ref": "", "ref_check": ""}
MANIFEST_FILE = "manifest.parquet"
SUMMARY_FILE = "dataset.json"


@dataclass(frozen=True)
class DatasetSummary:
    """What a dataset is, in a few numbers; written to dataset.json and into artifact metadata."""

    dataset_version: str
    num_images: int
    counts: dict[str, dict[str, int]]  # split -> label -> number of images
    by_reference: bool = False  # rows point at the source objects instead of copies in images/

    def to_dict(self) -> dict[str, object]:
        return {"dataset_version": self.dataset_version, "num_images": self.num_images, "counts": self.counts,
                "by_reference": self.by_reference}  # fmt: skip


def split_for_hash(sha256: str, splits: SplitSettings) -> str:
    """Deterministic split of an image from its content hash: the same bytes always land in the same split."""
    u = int(sha256[:16], 16) / 16**16
    if u < splits.train:
        return "train"
    if u < splits.train + splits.val:
        return "val"
    return "test"


def train_or_val_for_hash(sha256: str, splits: SplitSettings) -> str:
    """For sources that fix only train/test (CIFAKE): carve validation out of train by the same hash rule."""
    u = int(sha256[16:32], 16) / 16**16
    return "val" if u < splits.val / (splits.train + splits.val) else "train"


def with_later_columns(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest with every column added since older manifests were written (filled with its default)."""
    missing = {column: value for column, value in _LATER_COLUMNS.items() if column not in manifest.columns}
    return manifest.assign(**missing) if missing else manifest


def dataset_version(manifest: pd.DataFrame) -> str:
    """Hash of the manifest content, independent of row order and of where the files came from."""
    canonical = with_later_columns(manifest)[_VERSION_COLUMNS].sort_values(["sha256", "label", "split"]).astype(str)
    digest = hashlib.sha256()
    digest.update("\t".join(_VERSION_COLUMNS).encode())
    for row in canonical.itertuples(index=False):
        digest.update(b"\n" + "\t".join(row).encode())
    return digest.hexdigest()[:16]


def summarize(manifest: pd.DataFrame) -> DatasetSummary:
    counts = {
        split: {label: int(((manifest["split"] == split) & (manifest["label"] == label)).sum()) for label in LABELS}
        for split in SPLITS
    }
    by_reference = bool((with_later_columns(manifest)["ref"] != "").any())
    return DatasetSummary(dataset_version(manifest), len(manifest), counts, by_reference)


def write_dataset(manifest: pd.DataFrame, dataset_dir: Path) -> DatasetSummary:
    """Write the manifest and summary of a dataset whose images are already in ``dataset_dir/images`` (or, by
    reference, at its rows' ``ref``)."""
    manifest = with_later_columns(manifest)[MANIFEST_COLUMNS]
    manifest = manifest.sort_values(["split", "label", "sha256"]).reset_index(drop=True)
    manifest.to_parquet(dataset_dir / MANIFEST_FILE, index=False)
    summary = summarize(manifest)
    (dataset_dir / SUMMARY_FILE).write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary


def read_manifest(location: Path | str, s3: S3Settings | None = None) -> pd.DataFrame:
    """The manifest of an ingested dataset: a local folder, or an ``s3://bucket/prefix`` (``minio://`` too, as KFP
    names artifacts) on the store of ``s3``. One written before a column existed gets its default."""
    where = str(location)
    if not is_s3_uri(where):
        return with_later_columns(pd.read_parquet(Path(location) / MANIFEST_FILE))
    bucket, prefix = parse_uri(where)
    data = read_recorded(store_client(s3, where), bucket, prefix + MANIFEST_FILE)
    return with_later_columns(pd.read_parquet(io.BytesIO(data)))


def split_rows(manifest: pd.DataFrame, split: str, limit: int = 0, seed: int = 0) -> pd.DataFrame:
    """Rows of ``split`` in a stable order; with ``limit`` a class-stratified deterministic subset."""
    rows = manifest[manifest["split"] == split].sort_values("sha256").reset_index(drop=True)
    if limit and len(rows) > limit:
        share = limit / len(rows)
        parts = [g.sample(n=max(1, round(len(g) * share)), random_state=seed) for _, g in rows.groupby("label")]
        rows = pd.concat(parts).sort_values("sha256").reset_index(drop=True)
    return rows
