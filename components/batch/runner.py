"""The run: the sources' images in batches, ``concurrency`` of them in flight, each batch read, hashed and scored
into rows, the rows written as batches finish; a run that finds rows of an earlier one skips their sources."""

import hashlib
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import structlog
from tqdm import tqdm

from components.batch.client import Scorer, ServingUnavailableError, TritonScorer, score_images, wait_until_ready
from components.batch.failures import Retry, TransientError, with_retries
from components.batch.sources import FetchError, Item, expand_sources
from components.batch.writers import ResultWriter, Row, open_writer
from components.common import protocol
from components.common.errors import InvalidParameterError
from components.common.settings import S3Settings

log = structlog.get_logger(__name__)

# KServe's gRPC server takes messages up to 8 MiB: a request's images stay under this (one larger image goes alone).
MAX_REQUEST_BYTES = 7 * 1024 * 1024


def _requests(indices: list[int], sizes: list[int], max_bytes: int) -> Iterator[list[int]]:
    """Group images into requests of at most ``max_bytes`` (an image larger than that goes alone)."""
    group: list[int] = []
    total = 0
    for i in indices:
        if group and total + sizes[i] > max_bytes:
            yield group
            group, total = [], 0
        group.append(i)
        total += sizes[i]
    if group:
        yield group


@dataclass(frozen=True)
class PredictOptions:
    """How ``predict_batch`` calls the server."""

    batch_size: int = 8  # images per request (the server accepts up to protocol.DEFAULT_MAX_BATCH)
    concurrency: int = 8  # requests (and URL fetches) in flight at once
    max_image_bytes: int = 10 * 1024 * 1024  # larger images are error rows, never sent (settings.images.max_bytes)
    max_request_bytes: int = MAX_REQUEST_BYTES  # a request's images together (gRPC message limit)
    retry: Retry = field(
        default_factory=Retry
    )  # transient failures: connection errors, 5xx, 503 not ready, URL fetches
    retry_errors: bool = False  # score again the sources whose earlier row has an error
    progress: bool | None = None  # progress bar; None: when stderr is a terminal

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= protocol.DEFAULT_MAX_BATCH:
            raise InvalidParameterError(f"batch size {self.batch_size}: between 1 and {protocol.DEFAULT_MAX_BATCH}")
        if self.concurrency < 1:
            raise InvalidParameterError(f"concurrency {self.concurrency}: at least 1")


def _load(item: Item, options: PredictOptions) -> bytes:
    if item.size is not None and item.size > options.max_image_bytes:
        raise FetchError(f"the image is {item.size} bytes; the limit is {options.max_image_bytes} bytes (not sent)")
    data = item.load(options.max_image_bytes)
    if len(data) > options.max_image_bytes:
        raise FetchError(f"the image is {len(data)} bytes; the limit is {options.max_image_bytes} bytes (not sent)")
    return data


def score_batch(
    scorer: Scorer, items: Sequence[Item], options: PredictOptions, sleep: Callable[[float], None] = time.sleep
) -> list[Row]:
    """Read, hash and score ``items`` (one batch); one row per item, in order."""
    data: list[bytes] = []
    rows: list[Row | None] = []
    for item in items:
        try:
            blob = with_retries(partial(_load, item, options), options.retry, "fetch", sleep)
        except (FetchError, TransientError) as exc:
            rows.append(Row(item.source, error=str(exc)))
            data.append(b"")
            continue
        rows.append(None)
        data.append(blob)
    todo = [i for i, row in enumerate(rows) if row is None]
    for group in _requests(todo, [len(d) for d in data], options.max_request_bytes):
        answers = score_images(scorer, [data[i] for i in group], options.retry, sleep)
        for i, answer in zip(group, answers, strict=True):
            digest = hashlib.sha256(data[i]).hexdigest()
            if isinstance(answer, str):
                rows[i] = Row(items[i].source, digest, error=answer)
            else:
                rows[i] = Row(items[i].source, digest, answer.probability, answer.label, answer.confidence,
                              answer.model_version, answer.ai_declared, answer.c2pa, answer.provenance_generator,
                              answer.verdict_source or protocol.PIXELS)  # fmt: skip
    return [row for row in rows if row is not None]


@dataclass
class Summary:
    """What a run did."""

    out: Path
    scored: int = 0  # rows with a prediction
    errors: int = 0  # rows with an error
    skipped: int = 0  # sources a previous run had written
    seconds: float = 0.0  # wall time of the scoring
    model_versions: set[str] = field(default_factory=set)
    error_counts: Counter[str] = field(default_factory=Counter)  # rows per error message
    stopped: str | None = None  # why the run stopped early (the server stayed unavailable)

    @property
    def images_per_second(self) -> float:
        return (self.scored + self.errors) / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        versions = ", ".join(sorted(self.model_versions)) or "-"
        line = (
            f"{self.out}: scored {self.scored}, errors {self.errors}, skipped {self.skipped} (scored before); "
            f"{self.images_per_second:.1f} images/s over {self.seconds:.1f} s; model version {versions}"
        )
        for message, count in self.error_counts.most_common(5):
            line += f"\n  {count:>6} x {message}"
        return line + (f"\nstopped early: {self.stopped}" if self.stopped else "")


def predict_batch(  # noqa: PLR0913, PLR0917 - the batch run's inputs; its knobs are one PredictOptions
    sources: Sequence[str | Item],
    out: Path,
    scorer: Scorer,
    options: PredictOptions = PredictOptions(),
    fmt: str | None = None,
    s3: S3Settings | None = None,
) -> Summary:
    """Score every image of ``sources`` (strings, or items from ``expand_sources``) with ``scorer`` into ``out``,
    skipping the sources a previous run wrote there. When the server stays unavailable the run stops early: the rows
    of finished batches are written and ``summary.stopped`` says why."""
    items = [s for s in sources if isinstance(s, Item)]
    items += expand_sources([s for s in sources if isinstance(s, str)], s3)
    writer = open_writer(out, fmt)
    summary = Summary(out)
    try:
        if options.retry_errors and (dropped := writer.drop_errors()):
            log.info("predict_retrying_errors", rows=dropped)
        done = writer.done()
        todo = [item for item in items if item.source not in done]
        summary.skipped = len(items) - len(todo)
        _run(todo, scorer, writer, options, summary)
    finally:
        writer.close()
    log.info("predict_finished", scored=summary.scored, errors=summary.errors, skipped=summary.skipped,
             seconds=round(summary.seconds, 2), stopped=summary.stopped)  # fmt: skip
    return summary


def _run(todo: list[Item], scorer: Scorer, writer: ResultWriter, options: PredictOptions, summary: Summary) -> None:
    batches = iter([todo[i : i + options.batch_size] for i in range(0, len(todo), options.batch_size)])
    show = sys.stderr.isatty() if options.progress is None else options.progress
    started = time.perf_counter()
    pending: set[Future[list[Row]]] = set()

    def record(rows: list[Row]) -> None:
        writer.write(rows)
        for row in rows:
            if row.error is None:
                summary.scored += 1
                summary.model_versions.add(str(row.model_version))
            else:
                summary.errors += 1
                summary.error_counts[row.error] += 1
        bar.update(len(rows))

    with (
        ThreadPoolExecutor(options.concurrency, thread_name_prefix="predict") as pool,
        tqdm(total=len(todo), unit="img", disable=not show, smoothing=0.1) as bar,
    ):
        try:
            while True:
                while len(pending) < 2 * options.concurrency and (batch := next(batches, None)) is not None:
                    pending.add(pool.submit(score_batch, scorer, batch, options))
                if not pending:
                    break
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(finished, key=lambda f: f.exception() is not None):  # results before failures
                    record(future.result())
        except ServingUnavailableError as exc:
            for future in pending:
                future.cancel()
            for future in pending:  # batches already in flight still count when they finish
                if not future.cancelled() and future.exception() is None:
                    record(future.result())
            summary.stopped = str(exc)
            log.error("predict_stopped", error=str(exc))
        except BaseException:
            for future in pending:  # stop at once: a wrong model name, Ctrl-C
                future.cancel()
            raise
        finally:
            summary.seconds = time.perf_counter() - started


@dataclass(frozen=True)
class PredictJob:
    """One run of ``apd predict`` or of the ``batch_predict`` step: what to score, where the rows go, and the served
    model that scores them."""

    sources: Sequence[str]  # files, folders, .zip, s3://bucket/prefix, .txt URL lists, http(s) URLs
    out: Path  # the results file; a previous run's rows there are kept and their sources skipped
    url: str  # the model server: http(s)://host[:port] (v2 REST) or [grpc(s)://]host:port (v2 gRPC)
    model: str  # the served model's name
    protocol: str = "rest"  # rest | grpc
    options: PredictOptions = PredictOptions()
    s3: S3Settings | None = None  # for s3:// sources
    fmt: str | None = None  # csv | jsonl | parquet; None: from the extension of ``out``
    timeout: float = 60.0  # seconds per request


def run_predict(job: PredictJob) -> Summary:
    """The served model at ``job.url`` (checked ready first) scores ``job.sources`` into ``job.out``."""
    items: list[str | Item] = list(expand_sources(job.sources, job.s3))
    scorer = TritonScorer(job.url, job.model, job.protocol, job.timeout)
    try:
        wait_until_ready(scorer, job.options.retry)
    except ServingUnavailableError as exc:
        raise ServingUnavailableError(f"model {job.model!r} at {job.url} ({job.protocol}) is not ready: {exc}") from exc
    return predict_batch(items, job.out, scorer, job.options, job.fmt)
