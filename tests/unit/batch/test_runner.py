"""The run against a fake scorer (the real server is in tests/integration): a batch scored into rows, the byte
limits, writing every row and skipping them on a re-run, a run stopped by an unavailable server, the options."""

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from components.batch.client import ServingUnavailableError
from components.batch.failures import TransientError
from components.batch.runner import PredictJob, PredictOptions, predict_batch, run_predict, score_batch
from components.batch.sources import Item, expand_sources
from components.batch.writers import Row, read_rows
from components.common.errors import InvalidParameterError
from components.common.protocol import Answer
from tests.helpers.images import encode
from tests.unit.batch.fakes import FAST, FakeScorer


def _items(*blobs: bytes) -> list[Item]:
    def loader(blob: bytes) -> Callable[[int], bytes]:
        return lambda _: blob

    return [Item(f"img{n}", len(blob), loader(blob)) for n, blob in enumerate(blobs)]


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


def test_real_image_bytes_hash_as_files_do(tmp_path: Path) -> None:
    (tmp_path / "photo.png").write_bytes(encode("PNG", (40, 40)))
    rows = score_batch(FakeScorer(), expand_sources([str(tmp_path)]), PredictOptions(retry=FAST))
    assert rows[0].sha256 == hashlib.sha256((tmp_path / "photo.png").read_bytes()).hexdigest()


def test_a_job_is_scored_by_the_server_it_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[tuple[str, str, str, float]] = []

    def scorer(url: str, model: str, protocol: str, timeout: float) -> FakeScorer:
        made.append((url, model, protocol, timeout))
        return FakeScorer()

    monkeypatch.setattr("components.batch.runner.TritonScorer", scorer)
    options = PredictOptions(batch_size=2, retry=FAST, progress=False)
    job = PredictJob([str(_catalogue(tmp_path / "catalogue"))], tmp_path / "results", "127.0.0.1:8081",
                     "apd-detector", "grpc", options, fmt="jsonl", timeout=5.0)  # fmt: skip
    summary = run_predict(job)
    assert made == [("127.0.0.1:8081", "apd-detector", "grpc", 5.0)]
    assert (summary.scored, summary.errors) == (5, 1)
    assert len(read_rows(job.out, "jsonl")) == 6


def test_a_job_whose_model_is_not_ready_says_which(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeLoadingScorer(FakeScorer):
        def ready(self) -> bool:
            return False

    monkeypatch.setattr("components.batch.runner.TritonScorer", lambda *_: FakeLoadingScorer())
    job = PredictJob([], tmp_path / "results.csv", "http://127.0.0.1:8080", "apd-detector",
                     options=PredictOptions(retry=FAST))  # fmt: skip
    with pytest.raises(ServingUnavailableError, match=r"model 'apd-detector' at http://127.0.0.1:8080 \(rest\)"):
        run_predict(job)
    assert not job.out.exists()
