"""Ingest: a labelled image collection -> a versioned dataset (images + Parquet manifest).

Sources (``source`` argument):
- a local folder: ``real/`` and ``ai_generated/`` class folders (CIFAKE's ``REAL/``/``FAKE/`` too), optionally under
  split folders (``train/``, ``val/``/``validation/``, ``test/``); a subfolder of ``ai_generated/`` names the
  generator of the images in it (``ai_generated/<generator>/x.jpg``), recorded in the manifest's ``generator``
  column ("" for real images, for files directly in ``ai_generated/`` and for Parquet sources);
- ``s3://bucket/prefix`` on MinIO or any S3 endpoint, with the same layout below the prefix;
- a Parquet file, or a folder of them, exported from a Hugging Face image dataset (image bytes + label column;
  the split comes from a ``split`` column or from file names such as ``train-00000-of-00001.parquet``).

Splits come from the source when it fixes them (a source with only train/test gets validation carved out of
train), else from the content hash. Exact duplicates never straddle splits. Files are content-addressed in a
local cache and hard-linked into the output, so re-ingesting an unchanged source copies and hashes nothing.

By reference (``by_reference``, folder and S3 sources), nothing is copied: each manifest row names its source
object (``ref``) and how to recognise it unchanged (``ref_check``: ``size:mtime_ns`` of a file, the ETag of an
object), and the later stages read the sources through ``common.dataset_files``, which refuses a changed or
missing one. Each image is still read once to hash it; the cache index keeps its facts (not its bytes), so
re-ingesting an unchanged source by reference reads no image at all. The dataset version is the copied twin's.
"""

import hashlib
import json
import os
import re
import shutil
import stat
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

import pandas as pd
import pyarrow.parquet as pq
import structlog
from kfp.dsl import Dataset, Output
from tqdm import tqdm

from components.common.dataset import SPLITS, DatasetSummary, split_for_hash, train_or_val_for_hash, write_dataset
from components.common.dataset_files import file_check
from components.common.errors import DataSourceError
from components.common.images import probe_header
from components.common.s3 import parse_uri, read_recorded
from components.common.settings import S3Settings, SplitSettings
from components.stage import stage

log = structlog.get_logger(__name__)

LABEL_ALIASES = {"real": "real", "ai_generated": "ai_generated", "fake": "ai_generated"}
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test"}  # fmt: skip
_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
_LAYOUT_HELP = (
    "expected <root>/real/ and <root>/ai_generated/ (or REAL/ and FAKE/), optionally below train/, val/ and test/; "
    "optionally ai_generated/<generator>/"
)


@dataclass(frozen=True)
class SourceFile:
    """One labelled file of a source, before its bytes are read."""

    source: str  # where it came from (path, s3 URI, parquet file#row)
    label: str  # real | ai_generated
    split: str | None  # fixed by the source layout, or None to assign from the hash
    cache_key: str | None  # identifies unchanged content (path + size + mtime, or key + etag); None: always read
    generator: str = ""  # the ai_generated image's generator, from an ai_generated/<generator>/ folder; else ""
    ref: str = ""  # where a dataset by reference reads it (absolute path, s3 URI); "" when it cannot (Parquet)
    ref_check: str = ""  # what tells it unchanged: size:mtime_ns of a file, the ETag of an S3 object


@dataclass(frozen=True)
class IngestResult:
    """What ingest produced."""

    dataset_dir: Path
    summary: DatasetSummary
    files_seen: int
    duplicates_dropped: int
    bytes_read: int  # bytes actually read from the source (0 on an unchanged re-run of a folder or S3 source)
    by_reference: bool = False  # the manifest points at the source objects; nothing was copied


def _classify(parts: tuple[str, ...]) -> tuple[str, str | None, str] | None:
    """(label, fixed split, generator) from a file's path parts below the root, or None when it sits outside the
    layout. The generator is the folder an ai_generated file sits in one level below its label folder, else ""."""
    if len(parts) >= 3 and parts[0].lower() in SPLIT_ALIASES and parts[1].lower() in LABEL_ALIASES:
        split, below = SPLIT_ALIASES[parts[0].lower()], parts[1:]
    elif len(parts) >= 2 and parts[0].lower() in LABEL_ALIASES:
        split, below = None, parts
    else:
        return None
    label = LABEL_ALIASES[below[0].lower()]
    generator = below[1] if label == "ai_generated" and len(below) == 3 else ""  # ai_generated/<generator>/<file>
    return label, split, generator


class Source(Protocol):
    """A source lists labelled files and reads their bytes."""

    def files(self) -> list[SourceFile]: ...

    def read(self, item: SourceFile) -> bytes: ...


class FolderSource:
    def __init__(self, root: Path) -> None:
        self.root = root

    def files(self) -> list[SourceFile]:
        items, skipped = [], 0
        # Per file one stat and no path resolution or Path comparison: each costs seconds over 100,000 files.
        absolute = str(self.root.resolve())
        for path in sorted(self.root.rglob("*"), key=lambda p: p.parts):
            rel = path.relative_to(self.root).parts
            if any(part.startswith(".") for part in rel):
                continue
            try:
                info = path.stat()
            except FileNotFoundError:  # a dangling link
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            classified = _classify(rel)
            if classified is None:
                skipped += 1
                continue
            label, split, generator = classified
            ref, check = "/".join((absolute, *rel)), file_check(info)
            items.append(SourceFile(str(path), label, split, f"file:{ref}:{check}", generator, ref, check))
        if skipped:
            log.warning("ingest_files_outside_layout", root=str(self.root), skipped=skipped, layout=_LAYOUT_HELP)
        return items

    def read(self, item: SourceFile) -> bytes:
        return Path(item.source).read_bytes()


class S3Source:
    def __init__(self, uri: str, settings: S3Settings) -> None:

        self.bucket, self.prefix = parse_uri(uri)
        self.endpoint = settings.endpoint
        self.client = settings.client()

    def files(self) -> list[SourceFile]:
        items, skipped = [], 0
        for obj in self.client.list_objects(self.bucket, prefix=self.prefix, recursive=True):
            key = obj.object_name or ""
            rel = PurePosixPath(key[len(self.prefix) :]).parts
            classified = None if any(p.startswith(".") for p in rel) else _classify(rel)
            if classified is None or obj.is_dir:
                skipped += 1
                continue
            label, split, generator = classified
            uri = f"s3://{self.bucket}/{key}"
            cache_key = f"{self.endpoint}/{uri}:{obj.etag}:{obj.size}"
            items.append(SourceFile(uri, label, split, cache_key, generator, uri, obj.etag or ""))
        if skipped:
            log.warning("ingest_files_outside_layout", root=f"s3://{self.bucket}/{self.prefix}", skipped=skipped)
        return sorted(items, key=lambda i: i.source)

    def read(self, item: SourceFile) -> bytes:
        """The object as listed: one changed since (another ETag) is refused, so its facts match ``ref_check``."""
        return read_recorded(self.client, self.bucket, item.source[len(f"s3://{self.bucket}/") :], item.ref_check)


class ParquetSource:
    """Hugging Face image dataset exported to Parquet: an image column (struct with ``bytes``, or binary) and a
    label column (strings such as ``REAL``/``FAKE``, or integers mapped with ``label_map``)."""

    def __init__(self, path: Path, image_column: str, label_column: str, label_map: dict[str, str]) -> None:
        self.paths = sorted(path.glob("**/*.parquet")) if path.is_dir() else [path]
        if not self.paths:
            raise DataSourceError(f"no .parquet files under {path}")
        self.image_column, self.label_column = image_column, label_column
        self.label_map = {str(k).lower(): v for k, v in label_map.items()}
        self._rows: dict[str, bytes] = {}

    def _label(self, value: object, where: str) -> str:
        key = str(value).lower()
        label = self.label_map.get(key) or LABEL_ALIASES.get(key)
        if label is None:
            raise DataSourceError(
                f"{where}: label {value!r} is not one of {sorted(LABEL_ALIASES)}; "
                "pass a label map such as '0=ai_generated,1=real'"
            )
        return label

    def _split_of_file(self, path: Path) -> str | None:
        match = re.match(r"([a-z]+)[-_.]", path.name.lower())
        return SPLIT_ALIASES.get(match.group(1)) if match else None

    def files(self) -> list[SourceFile]:
        items: list[SourceFile] = []
        for path in self.paths:
            columns = pq.ParquetFile(path).schema_arrow.names
            for needed in (self.image_column, self.label_column):
                if needed not in columns:
                    raise DataSourceError(f"{path}: no column {needed!r}; columns are {columns}")
            wanted = [self.image_column, self.label_column] + (["split"] if "split" in columns else [])
            file_split = self._split_of_file(path)
            row = 0
            for batch in pq.ParquetFile(path).iter_batches(columns=wanted, batch_size=1024):
                for record in batch.to_pylist():
                    where = f"{path}#{row}"
                    image = record[self.image_column]
                    data = image.get("bytes") if isinstance(image, dict) else image
                    if not isinstance(data, bytes):
                        raise DataSourceError(f"{where}: column {self.image_column!r} holds no image bytes")
                    split = SPLIT_ALIASES.get(str(record.get("split", "")).lower()) or file_split
                    self._rows[where] = data
                    items.append(SourceFile(where, self._label(record[self.label_column], where), split, None))
                    row += 1
        return items

    def read(self, item: SourceFile) -> bytes:
        return self._rows.pop(item.source)


def parse_label_map(text: str) -> dict[str, str]:
    """'0=ai_generated,1=real' -> {'0': 'ai_generated', '1': 'real'}."""
    mapping = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or value not in LABEL_ALIASES.values():
            raise DataSourceError(f"bad label map entry {pair!r}; expected VALUE=real or VALUE=ai_generated")
        mapping[key.strip()] = value
    return mapping


def open_source(
    source: str, s3: S3Settings, image_column: str = "image", label_column: str = "label", label_map: str = ""
) -> Source:
    """Pick the reader for ``source``: s3:// URI, Parquet file/folder, or a class-folder tree."""
    if source.startswith("s3://"):
        return S3Source(source, s3)
    path = Path(source)
    if not path.exists():
        raise DataSourceError(f"source {source!r} does not exist; give a folder, a .parquet file or s3://bucket/prefix")
    is_parquet = path.suffix == ".parquet" or (
        path.is_dir() and any(path.glob("**/*.parquet")) and not any(_classify((p.name, "x")) for p in path.iterdir())
    )
    if is_parquet:
        return ParquetSource(path, image_column, label_column, parse_label_map(label_map))
    return FolderSource(path)


@dataclass(frozen=True)
class _Stored:
    """A file of the content-addressed store (or, by reference, only known to it), with the facts read when it
    was first ingested."""

    sha256: str
    name: str
    format: str
    width: int
    height: int
    bytes: int


class _ObjectCache:
    """Content-addressed store of ingested files plus an index from unchanged-source keys to their facts (and
    stored files, when copied)."""

    def __init__(self, root: Path) -> None:
        self.objects = root / "objects"
        self.index_path = root / "index.json"
        self.index: dict[str, dict[str, object]] = (
            json.loads(self.index_path.read_text()) if self.index_path.exists() else {}
        )

    def path(self, stored: _Stored) -> Path:
        return self.objects / stored.sha256[:2] / stored.name

    def lookup(self, key: str | None, stored_file: bool) -> _Stored | None:
        """A source file seen before and unchanged (with ``stored_file``: still present in the store). An entry
        from before sizes were recorded counts as unseen: the file is read once more."""
        entry = self.index.get(key) if key is not None else None
        if entry is None or "bytes" not in entry:
            return None
        stored = _Stored(**entry)  # type: ignore[arg-type]
        return stored if not stored_file or self.path(stored).exists() else None

    def put(self, key: str | None, data: bytes, store_file: bool) -> _Stored:
        """Hash and probe ``data``, index its facts under ``key``, and with ``store_file`` keep its bytes."""
        sha = hashlib.sha256(data).hexdigest()
        header = probe_header(data)
        suffix = _EXTENSIONS.get(header.format, "bin") if header else "bin"
        stored = _Stored(
            sha,
            f"{sha}.{suffix}",
            header.format if header else "",
            *(header.width, header.height) if header else (0, 0),
            len(data),
        )
        target = self.path(stored)
        if store_file and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
        if key is not None:
            self.index[key] = asdict(stored)
        return stored

    def link(self, stored: _Stored, dest: Path) -> None:
        """Hard-link a stored file into a dataset folder (a copy across filesystems)."""
        if dest.exists():
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(self.path(stored), dest)
        except OSError:
            shutil.copyfile(self.path(stored), dest)

    def save(self) -> None:
        self.index_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.index))
        tmp.replace(self.index_path)


def _resolve_splits(rows: pd.DataFrame, splits: SplitSettings) -> pd.Series:
    """Final split per row: fixed by the source or from the hash, then duplicates pulled into one split."""
    has_fixed_val = bool((rows["fixed_split"] == "val").any())

    def one(sha: str, fixed: str | None) -> str:
        if fixed is None:
            return split_for_hash(sha, splits)
        if fixed == "train" and not has_fixed_val:
            return train_or_val_for_hash(sha, splits)
        return fixed

    split = pd.Series([one(s, f) for s, f in zip(rows["sha256"], rows["fixed_split"], strict=True)], index=rows.index)
    # An image present in several splits goes to the earliest of train < val < test, keeping evaluation clean.
    order = split.map(SPLITS.index)
    return order.groupby(rows["sha256"]).transform("min").map(lambda i: SPLITS[i])


def ingest_dataset(
    source: str,
    out_dir: Path,
    cache_dir: Path,
    splits: SplitSettings,
    s3: S3Settings,
    image_column: str = "image",
    label_column: str = "label",
    label_map: str = "",
    by_reference: bool = False,
) -> IngestResult:
    """Ingest ``source`` into ``out_dir`` (images + manifest.parquet + dataset.json; by reference, no images).

    Raises:
        DataSourceError: the source is missing, has no files in the expected layout, or bad Parquet columns; a
            Parquet source by reference; an S3 object that changed while being read.
    """
    started = time.perf_counter()
    reader = open_source(source, s3, image_column, label_column, label_map)
    if by_reference and isinstance(reader, ParquetSource):
        raise DataSourceError(
            f"{source} is Parquet: its images are bytes inside the Parquet rows, not objects a dataset can refer to; "
            "ingest it by copying (by_reference off), or ingest a folder or s3:// source by reference"
        )
    items = reader.files()
    if not items:
        raise DataSourceError(f"no labelled images found in {source}; {_LAYOUT_HELP}")
    cache = _ObjectCache(cache_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, bytes_read = [], 0
    for item in tqdm(items, desc="ingest", unit="img", disable=not sys.stderr.isatty()):
        stored = cache.lookup(item.cache_key, stored_file=not by_reference)
        if stored is None:
            data = reader.read(item)
            bytes_read += len(data)
            stored = cache.put(item.cache_key, data, store_file=not by_reference)
        rel = f"images/{stored.sha256[:2]}/{stored.name}"
        if not by_reference:
            cache.link(stored, out_dir / rel)
        rows.append(
            {
                "sha256": stored.sha256,
                "label": item.label,
                "fixed_split": item.split,
                "generator": item.generator,
                "path": rel,
                "source": item.source,
                "format": stored.format,
                "width": stored.width,
                "height": stored.height,
                "bytes": stored.bytes,
                "ref": item.ref if by_reference else "",
                "ref_check": item.ref_check if by_reference else "",
            }
        )
    cache.save()
    frame = pd.DataFrame(rows)
    frame["split"] = _resolve_splits(frame, splits)
    before = len(frame)
    frame = frame.drop_duplicates(subset=["sha256", "label"], keep="first")
    summary = write_dataset(frame, out_dir)
    result = IngestResult(out_dir, summary, len(items), before - len(frame), bytes_read, by_reference)
    log.info(
        "ingest_done",
        source=source,
        by_reference=by_reference,
        dataset_version=summary.dataset_version,
        images=summary.num_images,
        files_seen=result.files_seen,
        duplicates_dropped=result.duplicates_dropped,
        bytes_read=bytes_read,
        seconds=round(time.perf_counter() - started, 2),
    )
    return result


@stage
def ingest(
    source: str,
    dataset: Output[Dataset],
    image_column: str = "image",
    label_column: str = "label",
    label_map: str = "",
    by_reference: bool = False,
) -> str:
    """Ingest a labelled image collection into a versioned dataset.

    Args:
        source: A class-folder tree, ``s3://bucket/prefix`` (endpoint and credentials from ``APD_S3__*``), or a
            Parquet export of a Hugging Face image dataset.
        dataset: Output folder with ``images/``, ``manifest.parquet`` and ``dataset.json``.
        image_column: Parquet sources only: the column holding the image (struct with ``bytes``, or binary).
        label_column: Parquet sources only: the column holding the label.
        label_map: Parquet sources only: label values to labels, e.g. ``0=ai_generated,1=real``.
        by_reference: Copy nothing: the manifest points at the source objects (folder and S3 sources; each is
            checked unchanged, by size and mtime or by ETag, whenever a later step reads it).

    Returns:
        The dataset version (hash of the manifest).
    """
    from pathlib import Path

    from components.common.logging import configure_logging
    from components.common.settings import Settings
    from components.ingest import ingest_dataset

    settings = Settings()
    configure_logging(settings.logging)
    result = ingest_dataset(
        source,
        Path(dataset.path),
        settings.data_dir / "cache",
        settings.splits,
        settings.s3,
        image_column,
        label_column,
        label_map,
        by_reference,
    )
    dataset.metadata.update(result.summary.to_dict())
    dataset.metadata["source"] = source
    return result.summary.dataset_version
