"""Batch prediction without a server: source expansion, output writers and resume, retries, and the re-sending of a
rejected batch one image at a time (against a fake scorer; the real server is in tests/integration)."""

import hashlib
import json
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from components.common.errors import DataSourceError, InvalidParameterError
from components.common.protocol import Answer
from components.predict import (
    Item,
    PredictError,
    PredictOptions,
    RejectedError,
    Retry,
    Row,
    ServingUnavailableError,
    TransientError,
    classify_failure,
    expand_sources,
    open_writer,
    output_format,
    parse_address,
    predict_batch,
    read_rows,
    score_batch,
    score_images,
)
from tests.conftest import encode

FAST = Retry(attempts=3, backoff_seconds=0.001, max_backoff_seconds=0.002)


class FakeScorer:
    """A fake of the served model (the real one runs in tests/integration): probability = first byte / 255; it rejects
    any request holding an image that starts with b"bad" (as the server answers 400 for the whole request), fails the
    first ``flaky`` calls with a transient error, and records every request."""

    def __init__(self, flaky: int = 0, unavailable: bool = True, server_error_on: bytes | None = None) -> None:
        self.requests: list[list[bytes]] = []
        self.flaky, self.unavailable, self.server_error_on = flaky, unavailable, server_error_on

    def ready(self) -> bool:
        return True

    def score(self, images: Sequence[bytes]) -> list[Answer]:
        self.requests.append(list(images))
        if self.flaky:
            self.flaky -= 1
            raise TransientError("connection refused", unavailable=self.unavailable)
        if self.server_error_on is not None and any(i.startswith(self.server_error_on) for i in images):
            raise TransientError("server error 500: boom", unavailable=False)
        for index, image in enumerate(images):
            if image.startswith(b"bad"):
                raise RejectedError(f"image[{index}] is not a recognised image")
        return [Answer(round(i[0] / 255, 6), "real", "high", "7") for i in images]


def _items(*blobs: bytes) -> list[Item]:
    def loader(blob: bytes) -> Callable[[int], bytes]:
        return lambda _: blob

    return [Item(f"img{n}", len(blob), loader(blob)) for n, blob in enumerate(blobs)]


# ----------------------------------------------------------------------------------------------------- sources


def test_a_folder_is_every_visible_file_below_it_sorted(tmp_path: Path) -> None:
    for name in ("b.jpg", "a/c.png", "a/d/e.webp", ".hidden.jpg", ".cache/f.jpg", "notes.txt.bak"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    items = expand_sources([str(tmp_path)])
    assert [Path(i.source).relative_to(tmp_path).as_posix() for i in items] == [
        "a/c.png",
        "a/d/e.webp",
        "b.jpg",
        "notes.txt.bak",  # not an image: the server says so in its row
    ]
    assert items[0].load(10) == b"x"


def test_a_zip_is_its_file_members(tmp_path: Path) -> None:
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("shop/a.jpg", b"jpeg bytes")
        zf.writestr("shop/", b"")  # a folder entry
        zf.writestr("__MACOSX/shop/._a.jpg", b"resource fork")
        zf.writestr("b.png", b"png bytes")
    items = expand_sources([str(archive)])
    assert [i.source for i in items] == [f"{archive}!shop/a.jpg", f"{archive}!b.png"]
    assert [i.load(100) for i in items] == [b"jpeg bytes", b"png bytes"]
    assert items[0].size == len(b"jpeg bytes")


def test_a_url_list_is_its_urls(tmp_path: Path) -> None:
    urls = tmp_path / "urls.txt"
    urls.write_text("# catalogue\nhttp://shop.example/a.jpg\n\n  https://cdn.example/b.png  \n")
    items = expand_sources([str(urls), "https://cdn.example/c.webp"])
    assert [i.source for i in items] == [
        "http://shop.example/a.jpg",
        "https://cdn.example/b.png",
        "https://cdn.example/c.webp",  # a URL given directly
    ]
    assert all(i.size is None for i in items)


def test_files_are_themselves_and_each_source_counts_once(tmp_path: Path) -> None:
    one, two = tmp_path / "one.jpg", tmp_path / "two.png"
    one.write_bytes(b"1")
    two.write_bytes(b"22")
    items = expand_sources([str(one), str(two), str(one)])
    assert [(i.source, i.size) for i in items] == [(str(one), 1), (str(two), 2)]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("ftp://shop.example/a.jpg\n", "urls.txt:1: 'ftp://shop.example/a.jpg' is not an http(s) URL"),  # scheme
        ("http://ok.example/a.jpg\nphoto.jpg\n", "urls.txt:2: 'photo.jpg' is not an http(s) URL"),  # a path
    ],
)
def test_a_bad_line_in_a_url_list_names_the_line(tmp_path: Path, content: str, says: str) -> None:
    (tmp_path / "urls.txt").write_text(content)
    with pytest.raises(DataSourceError, match=re.escape(says)):
        expand_sources([str(tmp_path / "urls.txt")])


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("missing/folder", "no such file or folder"),  # a typo
        ("s3://bucket/prefix", "S3 sources need S3 settings"),  # no S3 settings given
    ],
)
def test_bad_sources_say_why(source: str, says: str) -> None:
    with pytest.raises(DataSourceError, match=says):
        expand_sources([source])


def test_a_broken_zip_is_a_source_error(tmp_path: Path) -> None:
    (tmp_path / "broken.zip").write_bytes(b"PK not really")
    with pytest.raises(DataSourceError, match="not a readable ZIP archive"):
        expand_sources([str(tmp_path / "broken.zip")])


# ----------------------------------------------------------------------------------------------------- output


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
    monkeypatch.setattr("components.predict._PARQUET_PART_ROWS", 2)
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


# ----------------------------------------------------------------------------------------------------- scoring


def test_a_rejected_batch_is_sent_again_one_image_at_a_time() -> None:
    scorer = FakeScorer()
    answers = score_images(scorer, [b"\x10ok", b"bad", b"\x20ok"], FAST)
    assert answers == [
        Answer(round(16 / 255, 6), "real", "high", "7"),
        "image[0] is not a recognised image",  # the server's message for the image sent alone
        Answer(round(32 / 255, 6), "real", "high", "7"),
    ]
    assert [len(r) for r in scorer.requests] == [3, 1, 1, 1]


def test_a_batch_scores_into_rows_in_order_with_hashes() -> None:
    scorer = FakeScorer()
    rows = score_batch(scorer, _items(b"\x40ok", b"bad", b"\x80ok"), PredictOptions(retry=FAST))
    assert [r.source for r in rows] == ["img0", "img1", "img2"]
    assert rows[0].sha256 == hashlib.sha256(b"\x40ok").hexdigest()
    assert (rows[0].probability, rows[0].label, rows[0].confidence, rows[0].model_version) == (0.25098, "real",
                                                                                              "high", "7")  # fmt: skip
    assert rows[1] == Row("img1", hashlib.sha256(b"bad").hexdigest(), error="image[0] is not a recognised image")


def test_images_over_the_limit_are_error_rows_and_never_sent() -> None:
    scorer = FakeScorer()
    rows = score_batch(scorer, _items(b"\x01" * 50, b"\x02ok"), PredictOptions(retry=FAST, max_image_bytes=10))
    assert rows[0].error == "the image is 50 bytes; the limit is 10 bytes (not sent)"
    assert rows[0].sha256 is None
    assert scorer.requests == [[b"\x02ok"]]


def test_requests_stay_under_the_byte_limit() -> None:
    scorer = FakeScorer()
    blobs = [bytes([n]) * 40 for n in range(1, 6)]
    score_batch(scorer, _items(*blobs), PredictOptions(retry=FAST, max_request_bytes=100))
    assert [len(r) for r in scorer.requests] == [2, 2, 1]


def test_transient_failures_are_retried_with_backoff() -> None:
    scorer = FakeScorer(flaky=2)
    slept: list[float] = []
    answers = score_images(scorer, [b"\x10ok"], Retry(attempts=3, backoff_seconds=1.0), sleep=slept.append)
    assert isinstance(answers[0], Answer)
    assert len(scorer.requests) == 3
    assert 0.5 <= slept[0] <= 1.0  # half to all of the backoff (jitter)
    assert 1.0 <= slept[1] <= 2.0  # doubled


def test_a_server_that_stays_unavailable_stops_the_run() -> None:
    with pytest.raises(ServingUnavailableError, match="re-run the same command to resume"):
        score_images(FakeScorer(flaky=99), [b"\x10ok"], FAST, sleep=lambda _: None)


def test_a_5xx_that_persists_for_one_image_becomes_its_error_row() -> None:
    scorer = FakeScorer(server_error_on=b"boom")
    answers = score_images(scorer, [b"\x10ok", b"boom"], FAST, sleep=lambda _: None)
    assert isinstance(answers[0], Answer)
    assert answers[1] == "server error 500: boom"


@pytest.mark.parametrize(
    ("status", "kind", "unavailable"),
    [
        ("400", RejectedError, None),  # bad image: its row gets the message
        ("StatusCode.INVALID_ARGUMENT", RejectedError, None),  # the same over gRPC
        ("StatusCode.RESOURCE_EXHAUSTED", RejectedError, None),  # over the gRPC message limit
        ("503", TransientError, True),  # model not ready
        ("StatusCode.UNAVAILABLE", TransientError, True),  # connection refused over gRPC
        ("500", TransientError, False),  # a server bug for this request
        ("StatusCode.INTERNAL", TransientError, False),
        ("404", PredictError, None),  # wrong model name: stop at once
        ("StatusCode.NOT_FOUND", PredictError, None),
        ("401", PredictError, None),
    ],
)
def test_server_failures_are_classified(status: str, kind: type, unavailable: bool | None) -> None:
    failure = classify_failure(status, "message")
    assert type(failure) is kind
    if unavailable is not None:
        assert isinstance(failure, TransientError)
        assert failure.unavailable is unavailable


@pytest.mark.parametrize(
    ("url", "protocol", "expected"),
    [
        ("http://127.0.0.1:8080", "rest", ("127.0.0.1:8080", False)),
        ("https://apd.example.com/", "rest", ("apd.example.com", True)),
        ("127.0.0.1:8081", "grpc", ("127.0.0.1:8081", False)),
        ("grpcs://apd.example.com:443", "grpc", ("apd.example.com:443", True)),
    ],
)
def test_server_addresses(url: str, protocol: str, expected: tuple[str, bool]) -> None:
    assert parse_address(url, protocol) == expected


@pytest.mark.parametrize(
    ("url", "protocol"),
    [
        ("127.0.0.1:8080", "rest"),  # REST needs a scheme
        ("http://host/v2/models", "rest"),  # a path
        ("http://127.0.0.1:8081", "grpc"),  # an HTTP URL for gRPC
    ],
)
def test_bad_server_addresses(url: str, protocol: str) -> None:
    with pytest.raises(InvalidParameterError, match=f"bad {protocol} URL"):
        parse_address(url, protocol)


# ----------------------------------------------------------------------------------------------------- the run


def _catalogue(folder: Path) -> Path:
    folder.mkdir()
    for n in range(5):
        (folder / f"good{n}.jpg").write_bytes(bytes([10 * n + 1]) + b"ok")
    (folder / "broken.jpg").write_bytes(b"bad file")
    return folder


def test_a_run_writes_every_row_and_a_rerun_skips_them(tmp_path: Path) -> None:
    folder = _catalogue(tmp_path / "catalogue")
    out = tmp_path / "results.csv"
    options = PredictOptions(batch_size=2, concurrency=2, retry=FAST, progress=False)
    summary = predict_batch([str(folder)], out, FakeScorer(), options)
    assert (summary.scored, summary.errors, summary.skipped, summary.stopped) == (5, 1, 0, None)
    assert summary.model_versions == {"7"}
    assert "1 x image[0] is not a recognised image" in summary.text()
    rows = {Path(r["source"]).name: r for r in read_rows(out)}
    assert len(rows) == 6
    assert rows["broken.jpg"]["error"] == "image[0] is not a recognised image"
    again = FakeScorer()
    summary = predict_batch([str(folder)], out, again, options)
    assert (summary.scored, summary.errors, summary.skipped) == (0, 0, 6)
    assert again.requests == []
    (folder / "new.jpg").write_bytes(b"\x05ok")
    summary = predict_batch([str(folder)], out, FakeScorer(), options)
    assert (summary.scored, summary.skipped) == (1, 6)
    retried = predict_batch([str(folder)], out, FakeScorer(), PredictOptions(retry=FAST, retry_errors=True))
    assert (retried.errors, retried.skipped) == (1, 6)
    assert len(read_rows(out)) == 7  # the error row was replaced, not duplicated


def test_a_run_stopped_by_an_unavailable_server_keeps_its_rows(tmp_path: Path) -> None:
    folder = _catalogue(tmp_path / "catalogue")
    out = tmp_path / "results.parquet"

    class FakeDyingScorer(FakeScorer):
        """A fake server that answers four requests, then stays unreachable."""

        def score(self, images: Sequence[bytes]) -> list[Answer]:
            if len(self.requests) >= 4:  # the first batch took three (rejected, then one by one), the second one
                self.requests.append(list(images))
                raise TransientError("connection refused", unavailable=True)
            return super().score(images)

    options = PredictOptions(batch_size=2, concurrency=1, retry=FAST, progress=False)
    summary = predict_batch([str(folder)], out, FakeDyingScorer(), options)
    assert summary.stopped is not None
    assert "connection refused" in summary.stopped
    assert (summary.scored, summary.errors) == (3, 1)
    assert len(read_rows(out)) == 4  # merged into the Parquet file, parts gone
    rest = predict_batch([str(folder)], out, FakeScorer(), options)
    assert (rest.scored + rest.errors, rest.skipped) == (2, 4)


def test_options_are_checked() -> None:
    with pytest.raises(InvalidParameterError, match="between 1 and 32"):
        PredictOptions(batch_size=33)
    with pytest.raises(InvalidParameterError, match="at least 1"):
        PredictOptions(concurrency=0)


def test_the_cli_never_imports_kserve() -> None:
    """`apd predict --protocol grpc` needs tritonclient.grpc, which cannot share a process with kserve."""
    code = (
        "import sys; from components.cli import build_parser; import components.predict; "
        "a = build_parser().parse_args(['predict', 'x', '--out', 'y.csv', '--protocol', 'grpc']); "
        "print(a.protocol, a.batch_size, a.concurrency, 'kserve' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["grpc", "8", "8", "False"]


def test_real_image_bytes_hash_as_files_do(tmp_path: Path) -> None:
    (tmp_path / "photo.png").write_bytes(encode("PNG", (40, 40)))
    rows = score_batch(FakeScorer(), expand_sources([str(tmp_path)]), PredictOptions(retry=FAST))
    assert rows[0].sha256 == hashlib.sha256((tmp_path / "photo.png").read_bytes()).hexdigest()
