"""The v2 client against a fake scorer (the real server is in tests/integration): the re-sending of a rejected
batch one image at a time, retries with backoff, the classification of server failures, server addresses, and the
client staying out of processes with kserve."""

import subprocess
import sys

import pytest

from components.batch.client import (
    RejectedError,
    ServingUnavailableError,
    classify_failure,
    parse_address,
    score_images,
)
from components.batch.failures import PredictError, Retry, TransientError
from components.common.errors import InvalidParameterError
from components.common.protocol import Answer
from tests.unit.batch.fakes import FAST, FakeScorer


def test_a_rejected_batch_is_sent_again_one_image_at_a_time() -> None:
    scorer = FakeScorer()
    answers = score_images(scorer, [b"\x10ok", b"bad", b"\x20ok"], FAST)
    assert answers == [
        Answer(round(16 / 255, 6), "real", "high", "7"),
        "image[0] is not a recognised image",  # the server's message for the image sent alone
        Answer(round(32 / 255, 6), "real", "high", "7"),
    ]
    assert [len(r) for r in scorer.requests] == [3, 1, 1, 1]


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


def test_the_cli_never_imports_kserve() -> None:
    """`apd predict --protocol grpc` needs tritonclient.grpc, which cannot share a process with kserve."""
    code = (
        "import sys; from components.cli import build_parser; import components.batch; import components.predict; "
        "a = build_parser().parse_args(['predict', 'x', '--out', 'y.csv', '--protocol', 'grpc']); "
        "print(a.protocol, a.batch_size, a.concurrency, 'kserve' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["grpc", "8", "8", "False"]
