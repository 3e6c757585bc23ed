"""Where the rows go, resumably: CSV and JSON Lines appended after each batch; Parquet in part files during the
run, merged into the output at its end. Each writer knows which sources a previous run already wrote."""

import csv
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

from components.batch.failures import PredictError
from components.common.errors import InvalidParameterError

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_PARQUET_PART_ROWS = 1000  # rows per part file while a Parquet run goes on


@dataclass(frozen=True)
class Row:
    """One output row."""

    source: str
    sha256: str | None = None  # of the bytes sent (None when they could not be read)
    probability: float | None = None  # that the image is AI-generated
    label: str | None = None  # ai_generated | real
    confidence: str | None = None  # low | medium | high
    model_version: str | None = None  # the served model version that scored it
    ai_declared: bool | None = None  # the file declares AI generation or AI compositing (C2PA, IPTC, tool metadata)
    c2pa: str | None = None  # absent | valid | trusted | invalid | unreadable
    provenance_generator: str | None = None  # the generator the strongest AI declaration names
    verdict_source: str | None = None  # pixels | provenance: what decided the label
    error: str | None = None  # None, or why there is no prediction: the server's 400 message, the fetch error


COLUMNS = tuple(f.name for f in fields(Row))


def output_format(out: Path, fmt: str | None = None) -> str:
    """``csv``, ``jsonl`` or ``parquet``: ``fmt`` when given, else from the output's extension."""
    if fmt:
        if fmt not in set(FORMATS.values()):
            raise InvalidParameterError(f"unknown format {fmt!r}; use csv, jsonl or parquet")
        return fmt
    if out.suffix.lower() not in FORMATS:
        raise InvalidParameterError(
            f"cannot tell the format of {out} from its extension; name it .csv, .jsonl or .parquet, or pass --format"
        )
    return FORMATS[out.suffix.lower()]


class ResultWriter(Protocol):
    """Where rows go; it knows which sources a previous run already wrote."""

    def done(self) -> set[str]: ...

    def drop_errors(self) -> int: ...

    def write(self, rows: Sequence[Row]) -> None: ...

    def close(self) -> None: ...


def _cut_partial_line(path: Path) -> None:
    """Drop an unfinished last line (a run killed mid-write) so that appending starts on a fresh line."""
    with path.open("rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        tail = min(size, 1 << 20)
        handle.seek(size - tail)
        end = handle.read(tail).rfind(b"\n")
        handle.truncate(size - tail + end + 1 if end >= 0 else 0)


class _TextWriter:
    """CSV and JSON Lines: rows are appended and flushed after every batch."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.fmt = path, fmt
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            _cut_partial_line(path)
        self._done = {str(r["source"]) for r in self._read()}
        self._file = path.open("a", newline="")
        self._csv = csv.DictWriter(self._file, COLUMNS) if fmt == "csv" else None
        if self._csv is not None and self._file.tell() == 0:
            self._csv.writeheader()

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return []
        with self.path.open(newline="") as handle:
            if self.fmt == "csv":
                reader = csv.DictReader(handle)
                if tuple(reader.fieldnames or ()) != COLUMNS:
                    raise PredictError(f"{self.path} is not a predictions file: its columns are {reader.fieldnames}")
                return list(reader)
            rows = [json.loads(line) for line in handle if line.strip()]
        if any(not isinstance(r, dict) or "source" not in r for r in rows):
            raise PredictError(f"{self.path} is not a predictions file: a line has no 'source'")
        return rows

    def done(self) -> set[str]:
        return set(self._done)

    def drop_errors(self) -> int:
        rows = self._read()
        kept = [r for r in rows if not r.get("error")]  # CSV: "", JSON: null
        dropped = len(rows) - len(kept)
        if dropped:
            self._file.close()
            tmp = self.path.with_name(self.path.name + ".tmp")
            with tmp.open("w", newline="") as handle:
                if self.fmt == "csv":
                    writer = csv.DictWriter(handle, COLUMNS)
                    writer.writeheader()
                    writer.writerows(kept)
                else:
                    handle.writelines(json.dumps(r) + "\n" for r in kept)
            tmp.replace(self.path)
            self._done = {str(r["source"]) for r in kept}
            self._file = self.path.open("a", newline="")
            self._csv = csv.DictWriter(self._file, COLUMNS) if self.fmt == "csv" else None
        return dropped

    def write(self, rows: Sequence[Row]) -> None:
        for row in rows:
            if self._csv is not None:
                self._csv.writerow(asdict(row))
            else:
                self._file.write(json.dumps(asdict(row)) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class _ParquetWriter:
    """Parquet: part files in ``<out>.parts/`` during the run, merged into ``<out>`` (atomically) at the end."""

    def __init__(self, path: Path) -> None:
        import pyarrow as pa

        self.path = path
        self.parts = path.with_name(path.name + ".parts")
        types = {"probability": pa.float64(), "ai_declared": pa.bool_()}
        self.schema = pa.schema([(c, types.get(c, pa.string())) for c in COLUMNS])
        path.parent.mkdir(parents=True, exist_ok=True)
        self._pending: list[Row] = []
        self._done = set(self._table().column("source").to_pylist())

    def _files(self) -> list[Path]:
        parts = sorted(self.parts.glob("part-*.parquet")) if self.parts.is_dir() else []
        return ([self.path] if self.path.exists() else []) + parts

    def _table(self) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = []
        for file in self._files():
            table = pq.read_table(file)
            if tuple(table.column_names) != COLUMNS:
                raise PredictError(f"{file} is not a predictions file: its columns are {table.column_names}")
            tables.append(table.cast(self.schema))
        table = pa.concat_tables(tables) if tables else self.schema.empty_table()
        first: dict[str, int] = {}  # a merge killed after its rename but before removing the parts leaves copies
        for index, source in enumerate(table.column("source").to_pylist()):
            first.setdefault(source, index)
        return table if len(first) == table.num_rows else table.take(sorted(first.values()))

    def done(self) -> set[str]:
        return set(self._done)

    def drop_errors(self) -> int:
        import pyarrow.compute as pc

        table = self._table()
        kept = table.filter(pc.is_null(table.column("error")))
        if kept.num_rows < table.num_rows:
            self._replace(kept)
            self._done = set(kept.column("source").to_pylist())
        return int(table.num_rows - kept.num_rows)

    def write(self, rows: Sequence[Row]) -> None:
        self._pending += rows
        if len(self._pending) >= _PARQUET_PART_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._pending:
            return
        self.parts.mkdir(exist_ok=True)
        number = len(list(self.parts.glob("part-*.parquet")))
        table = pa.Table.from_pylist([asdict(r) for r in self._pending], schema=self.schema)
        tmp = self.parts / f".part-{number:06d}.tmp"
        pq.write_table(table, tmp)
        tmp.replace(self.parts / f"part-{number:06d}.parquet")  # a part is there whole or not at all
        self._pending = []

    def _replace(self, table: Any) -> None:
        import pyarrow.parquet as pq

        tmp = self.path.with_name(self.path.name + ".tmp")
        pq.write_table(table, tmp)
        tmp.replace(self.path)
        shutil.rmtree(self.parts, ignore_errors=True)

    def close(self) -> None:
        self._flush()
        if self.parts.is_dir() or not self.path.exists():
            self._replace(self._table())


def open_writer(out: Path, fmt: str | None = None) -> ResultWriter:
    """The writer for ``out`` (format from ``fmt`` or the extension), holding what a previous run wrote there."""
    kind = output_format(out, fmt)
    return _ParquetWriter(out) if kind == "parquet" else _TextWriter(out, kind)


def read_rows(out: Path, fmt: str | None = None) -> list[dict[str, Any]]:
    """The rows of an output file as dicts (CSV cells are strings, empty for null)."""
    kind = output_format(out, fmt)
    if kind == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_table(out).to_pylist())
    with out.open(newline="") as handle:
        if kind == "csv":
            return list(csv.DictReader(handle))
        return [json.loads(line) for line in handle if line.strip()]
