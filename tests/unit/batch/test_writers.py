"""Output writers: the format from the name or --format, appending across runs, resume after a killed run, and
the dropping of error rows (CSV, JSON Lines, Parquet)."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from components.batch.failures import PredictError
from components.batch.writers import Row, open_writer, output_format, read_rows
from components.common.errors import InvalidParameterError


@pytest.mark.parametrize(
    ("name", "fmt", "expected"),
    [
        ("out.csv", None, "csv"),
        ("out.JSONL", None, "jsonl"),  # case does not matter
        ("out.ndjson", None, "jsonl"),
        ("out.parquet", None, "parquet"),
        ("predictions", "parquet", "parquet"),  # no extension: --format decides (the KFP output path)
        ("out.csv", "jsonl", "jsonl"),  # --format wins over the extension
    ],
)
def test_output_format(name: str, fmt: str | None, expected: str) -> None:
    assert output_format(Path(name), fmt) == expected


@pytest.mark.parametrize(("name", "fmt"), [("out.xlsx", None), ("out.csv", "excel")])
def test_unknown_output_formats_say_what_is_accepted(name: str, fmt: str | None) -> None:
    with pytest.raises(InvalidParameterError, match=r"csv, \.?jsonl or \.?parquet"):
        output_format(Path(name), fmt)


ROWS = [
    Row("a.jpg", "aa", 0.25, "ai_generated", "high", "7", True, "trusted", "DALL-E", "provenance"),
    Row("b.gif", "bb", error="GIF images are not accepted"),
    Row("c.png", None, error="fetch failed: HTTP 404 Not Found"),
]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_writers_append_across_runs_and_remember_what_is_done(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"sub/results{suffix}"
    writer = open_writer(out)
    assert writer.done() == set()
    writer.write(ROWS[:2])
    writer.close()
    writer = open_writer(out)  # a second run
    assert writer.done() == {"a.jpg", "b.gif"}
    writer.write(ROWS[2:])
    writer.close()
    rows = read_rows(out)
    assert [r["source"] for r in rows] == ["a.jpg", "b.gif", "c.png"]
    assert float(rows[0]["probability"]) == 0.25
    assert str(rows[0]["ai_declared"]) == "True"  # Parquet, JSON: a boolean; CSV: its text
    assert (rows[0]["c2pa"], rows[0]["provenance_generator"], rows[0]["verdict_source"]) == (
        "trusted", "DALL-E", "provenance",
    )  # fmt: skip
    assert rows[1]["error"] == "GIF images are not accepted"
    assert rows[0]["error"] in (None, "")  # null (CSV: empty)
    assert list(rows[0]) == [
        "source", "sha256", "probability", "label", "confidence", "model_version",
        "ai_declared", "c2pa", "provenance_generator", "verdict_source", "error",
    ]  # fmt: skip


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_retry_errors_drops_the_error_rows(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"results{suffix}"
    writer = open_writer(out)
    writer.write(ROWS)
    writer.close()
    writer = open_writer(out)
    assert writer.drop_errors() == 2
    assert writer.done() == {"a.jpg"}
    writer.close()
    assert [r["source"] for r in read_rows(out)] == ["a.jpg"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_line_cut_by_a_killed_run_is_dropped_and_scored_again(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"results{suffix}"
    writer = open_writer(out)
    writer.write(ROWS[:2])
    writer.close()
    out.write_bytes(out.read_bytes()[:-7])  # the second row, half written
    writer = open_writer(out)
    assert writer.done() == {"a.jpg"}
    writer.write(ROWS[1:2])
    writer.close()
    assert [r["source"] for r in read_rows(out)] == ["a.jpg", "b.gif"]


def test_parquet_keeps_parts_until_the_end_and_a_killed_run_resumes_from_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("components.batch.writers._PARQUET_PART_ROWS", 2)
    out = tmp_path / "results.parquet"
    parts = tmp_path / "results.parquet.parts"
    writer = open_writer(out)
    writer.write(ROWS[:2])  # a part is written at 2 rows
    writer.write(ROWS[2:])  # pending
    assert len(list(parts.glob("part-*.parquet"))) == 1
    assert not out.exists()
    del writer  # killed: close() never runs, the pending row is lost
    writer = open_writer(out)
    assert writer.done() == {"a.jpg", "b.gif"}
    writer.write(ROWS[2:])
    writer.close()
    assert not parts.exists()
    table = pq.read_table(out)
    assert table.column("source").to_pylist() == ["a.jpg", "b.gif", "c.png"]
    assert str(table.schema.field("probability").type) == "double"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_file_that_is_not_ours_is_not_appended_to(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"other{suffix}"
    out.write_text("name,price\nshoe,10\n" if suffix == ".csv" else json.dumps({"name": "shoe"}) + "\n")
    with pytest.raises(PredictError, match="is not a predictions file"):
        open_writer(out)
