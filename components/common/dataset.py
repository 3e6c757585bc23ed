"""The dataset contract between ingest and every later stage: a folder of images plus a Parquet manifest.

Layout of an ingested dataset folder::

    manifest.parquet          one row per image (columns: MANIFEST_COLUMNS)
    dataset.json              {"dataset_version": ..., "num_images": ..., "counts": ...}
    images/<sha[:2]>/<sha>.<ext>

The dataset version is a hash of the manifest's content (not of its file bytes, which depend on the Parquet
writer) and travels in the metadata of every artifact made from the dataset.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from components.common.settings import SplitSettings

LABELS = ("real", "ai_generated")
SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ["sha256", "label", "split", "generator", "path", "source", "format", "width", "height", "bytes"]
# Columns whose values define the dataset; `source` (where a file came from) does not change the version.
_VERSION_COLUMNS = ["sha256", "label", "split", "generator", "path", "format", "width", "height", "bytes"]
# Columns added after the first manifests were written, with the value older manifests stand for. `generator`:
# the generator of an ai_generated image when the source says it (``ai_generated/<generator>/``), else "".
_LATER_COLUMNS = {"generator": ""}
MANIFEST_FILE = "manifest.parquet"
SUMMARY_FILE = "dataset.json"


@dataclass(frozen=True)
class DatasetSummary:
    """What a dataset is, in a few numbers; written to dataset.json and into artifact metadata."""

    dataset_version: str
    num_images: int
    counts: dict[str, dict[str, int]]  # split -> label -> number of images

    def to_dict(self) -> dict[str, object]:
        return {"dataset_version": self.dataset_version, "num_images": self.num_images, "counts": self.counts}


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


def _complete(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest with every column added since older manifests were written (filled with its default)."""
    missing = {column: value for column, value in _LATER_COLUMNS.items() if column not in manifest.columns}
    return manifest.assign(**missing) if missing else manifest


def dataset_version(manifest: pd.DataFrame) -> str:
    """Hash of the manifest content, independent of row order and of where the files came from."""
    canonical = _complete(manifest)[_VERSION_COLUMNS].sort_values(["sha256", "label", "split"]).astype(str)
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
    return DatasetSummary(dataset_version=dataset_version(manifest), num_images=len(manifest), counts=counts)


def write_dataset(manifest: pd.DataFrame, dataset_dir: Path) -> DatasetSummary:
    """Write the manifest and summary of a dataset whose images are already in ``dataset_dir/images``."""
    manifest = _complete(manifest)[MANIFEST_COLUMNS].sort_values(["split", "label", "sha256"]).reset_index(drop=True)
    manifest.to_parquet(dataset_dir / MANIFEST_FILE, index=False)
    summary = summarize(manifest)
    (dataset_dir / SUMMARY_FILE).write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary


def read_manifest(dataset_dir: Path) -> pd.DataFrame:
    """The manifest of an ingested dataset folder (one written before a column existed gets its default)."""
    return _complete(pd.read_parquet(dataset_dir / MANIFEST_FILE))


def split_rows(manifest: pd.DataFrame, split: str, limit: int = 0, seed: int = 0) -> pd.DataFrame:
    """Rows of ``split`` in a stable order; with ``limit`` a class-stratified deterministic subset."""
    rows = manifest[manifest["split"] == split].sort_values("sha256").reset_index(drop=True)
    if limit and len(rows) > limit:
        share = limit / len(rows)
        parts = [g.sample(n=max(1, round(len(g) * share)), random_state=seed) for _, g in rows.groupby("label")]
        rows = pd.concat(parts).sort_values("sha256").reset_index(drop=True)
    return rows
