"""API keys and rate limits (``serving.auth``): the keys file, constant-time lookup, reload on change, the token
bucket on an injected clock, the decisions and their counts, and the ASGI middleware on a small Starlette app.
Against the real model server (REST v1/v2, gRPC) and the page: tests/integration/test_auth.py."""

import hashlib
import hmac
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from components.common.errors import KeyFileError
from components.common.settings import AuthSettings
from serving import auth
from serving.auth import (
    ApiKeyMiddleware,
    Guard,
    KeyStore,
    Outcome,
    RateLimiter,
    hash_key,
    key_line,
    model_server_needs_key,
    parse_keys,
    presented_key,
)

ALICE, BOB = "alice-key-7f3a9c", "bob-key-0d1e2f"


class Clock:
    """A fake clock (time.monotonic's stand-in) that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _keys_file(folder: Path, **keys: str) -> Path:
    path = folder / "keys"
    path.write_text("# API keys of the detector\n" + "".join(key_line(n, k) + "\n" for n, k in keys.items()))
    return path


def _counter() -> Counter:
    return Counter("apd_auth_requests_total", "test", ["outcome"], registry=CollectorRegistry())


def _guard(path: Path, clock: Clock, rate: float = 2.0, burst: int = 3) -> tuple[Guard, Counter]:
    counter = _counter()
    settings = AuthSettings(enabled=True, keys_file=path, reload_seconds=5, rate_per_second=rate, burst=burst)
    return Guard(settings, counter=counter, clock=clock), counter


# ---- the keys file ----


def test_a_keys_line_is_the_name_and_the_sha256_of_the_key() -> None:
    assert hash_key(ALICE) == hashlib.sha256(ALICE.encode()).hexdigest()  # what `printf %s "$KEY" | sha256sum` prints
    assert key_line("alice", ALICE) == f"alice:{hash_key(ALICE)}"
    assert parse_keys(key_line("alice", ALICE), "keys") == {"alice": hashlib.sha256(ALICE.encode()).digest()}


def test_apd_auth_hash_key_reads_the_key_on_stdin() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "components.cli", "auth", "hash-key", "--name", "alice"],
        input=ALICE + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == key_line("alice", ALICE)
    assert ALICE not in done.stdout


def test_comments_blank_lines_spaces_and_upper_case_hex_are_accepted() -> None:
    text = f"# ops team\n\n  alice : {hash_key(ALICE).upper()}  \nbob:{hash_key(BOB)}\n"
    assert sorted(parse_keys(text, "keys")) == ["alice", "bob"]


HASH = hash_key(ALICE)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (f"# header\n\n{HASH}", "keys line 3: expected NAME:SHA256HEX"),  # a hash without a name
        (f"al ice:{HASH}", "keys line 1: a key name is 1-64 letters"),  # a space in the name
        (f"-alice:{HASH}", "keys line 1: a key name is 1-64 letters"),  # must start with a letter or digit
        (f"alice:{HASH[:40]}", "keys line 1: the hash of 'alice' is not 64 hex digits"),  # a SHA-1, not a SHA-256
        (f"alice:{ALICE}", "never the key itself"),  # the key where its hash belongs
        (f"alice:{HASH}\nalice:{hash_key(BOB)}", "keys line 2: the name 'alice' is listed twice"),
        (f"alice:{HASH}\nbob:{HASH}", "keys line 2: 'bob' has the hash of a key listed above"),
    ],
)
def test_a_bad_line_is_refused_naming_its_line_never_its_content(text: str, says: str) -> None:
    with pytest.raises(KeyFileError) as refused:
        parse_keys(text, "keys")
    assert says in str(refused.value)
    assert ALICE not in str(refused.value)  # a key written by mistake never reaches a log


def test_a_missing_keys_file_is_an_error_at_the_start(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read the keys file"):
        KeyStore(tmp_path / "nope", 5)


def test_keys_on_need_a_keys_file() -> None:
    with pytest.raises(ValidationError, match="APD_AUTH__ENABLED=true needs APD_AUTH__KEYS_FILE"):
        AuthSettings(enabled=True)
    assert AuthSettings().enabled is False  # off by default


# ---- lookup and reload ----


def test_every_stored_hash_is_compared_in_constant_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = KeyStore(_keys_file(tmp_path, alice=ALICE, bob=BOB, carol="carol-key"), 5)
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert store.name_of(ALICE) == "alice"  # the first entry: the loop still runs through all three
    assert len(calls) == 3
    assert all(a == hashlib.sha256(ALICE.encode()).digest() for a, _ in calls)  # digests, never the key itself
    assert store.name_of("wrong") is None
    assert len(calls) == 6


def test_the_file_is_reread_when_it_changes_at_most_every_reload_seconds(tmp_path: Path) -> None:
    clock = Clock()
    path = _keys_file(tmp_path, alice=ALICE, bob=BOB)
    store = KeyStore(path, 5, clock)
    assert store.name_of(BOB) == "bob"
    path.write_text(key_line("alice", ALICE) + "\n")  # bob revoked
    clock.now += 4
    assert store.name_of(BOB) == "bob"  # not looked at yet
    clock.now += 1
    assert store.name_of(BOB) is None  # revoked without a restart
    assert store.name_of(ALICE) == "alice"


def test_a_file_broken_after_the_start_leaves_no_key_valid_until_fixed(tmp_path: Path) -> None:
    clock = Clock()
    path = _keys_file(tmp_path, alice=ALICE)
    store = KeyStore(path, 5, clock)
    path.write_text(f"alice {hash_key(ALICE)}\n")  # a typo: no colon
    clock.now += 5
    assert store.name_of(ALICE) is None  # fail closed: a typo never keeps a revoked key alive
    path.unlink()
    clock.now += 5
    assert store.name_of(ALICE) is None
    _keys_file(tmp_path, alice=ALICE)
    clock.now += 5
    assert store.name_of(ALICE) == "alice"


def test_a_kubernetes_secret_update_swaps_the_file_under_a_symlink(tmp_path: Path) -> None:
    """The kubelet writes a new timestamped folder and repoints ``..data``: the path's target changes."""
    clock = Clock()
    (tmp_path / "v1").mkdir()
    _keys_file(tmp_path / "v1", alice=ALICE, bob=BOB)
    (tmp_path / "..data").symlink_to("v1")
    (tmp_path / "keys").symlink_to("..data/keys")
    store = KeyStore(tmp_path / "keys", 5, clock)
    (tmp_path / "v2").mkdir()
    _keys_file(tmp_path / "v2", alice=ALICE)
    _symlink(tmp_path, "v2").replace(tmp_path / "..data")  # rename(2): atomic, as the kubelet does
    clock.now += 5
    assert store.name_of(BOB) is None
    assert store.name_of(ALICE) == "alice"


def _symlink(folder: Path, target: str) -> Path:
    link = folder / "..data_tmp"
    link.symlink_to(target)
    return link


# ---- rate limits ----


def test_the_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.wait("alice") for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst
    assert limiter.wait("alice") == pytest.approx(0.5)  # empty: one token in 1/rate s
    assert limiter.wait("bob") == 0.0  # a bucket per key
    clock.now += 0.5
    assert limiter.wait("alice") == 0.0
    assert limiter.wait("alice") == pytest.approx(0.5)
    clock.now += 60
    assert [limiter.wait("alice") for _ in range(4)][-1] > 0  # refilled up to the burst, not beyond


def test_rate_zero_is_no_limit() -> None:
    limiter = RateLimiter(rate=0.0, burst=1, clock=Clock())
    assert {limiter.wait("alice") for _ in range(1000)} == {0.0}


# ---- decisions ----


@pytest.mark.parametrize(
    ("api_key", "authorization", "key"),
    [
        ("k1", None, "k1"),  # X-API-Key
        (None, "Bearer k2", "k2"),  # Authorization: Bearer
        (None, "bearer   k2 ", "k2"),  # the scheme is case-insensitive
        ("k1", "Bearer eyJ-a-jwt", "k1"),  # X-API-Key wins: a mesh's JWT may travel in Authorization
        (None, "Basic YWxpY2U6cHc=", None),  # another scheme: no key
        ("", "Bearer ", None),  # empty values: no key
        (None, None, None),  # nothing
    ],
)
def test_the_presented_key(api_key: str | None, authorization: str | None, key: str | None) -> None:
    assert presented_key(api_key, authorization) == key


def test_decisions_and_their_counts(tmp_path: Path) -> None:
    clock = Clock()
    guard, counter = _guard(_keys_file(tmp_path, alice=ALICE), clock, rate=2.0, burst=2)
    assert guard.check(None).outcome is Outcome.MISSING
    assert guard.check("wrong").outcome is Outcome.INVALID
    assert [guard.check(ALICE).outcome for _ in range(2)] == [Outcome.OK, Outcome.OK]
    limited = guard.check(ALICE)
    assert (limited.outcome, limited.key_name, limited.retry_after) == (Outcome.RATE_LIMITED, "alice", 1)
    assert "rate limit of key 'alice' reached (2 requests/s, burst 2): retry in 1 s" in limited.message
    assert ALICE not in limited.message
    counts = {s.labels["outcome"]: s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total")}
    assert counts == {"ok": 2, "missing": 1, "invalid": 1, "rate_limited": 1}


def test_retry_after_is_whole_seconds_rounded_up(tmp_path: Path) -> None:
    guard, _ = _guard(_keys_file(tmp_path, alice=ALICE), Clock(), rate=0.4, burst=1)
    guard.check(ALICE)
    assert guard.check(ALICE).retry_after == 3  # one token in 2.5 s


@pytest.mark.parametrize(
    ("path", "needs"),
    [
        ("/", False),  # KServe's liveness
        ("/metrics", False),  # Prometheus
        ("/v2/health/live", False),
        ("/v2/health/ready", False),
        ("/v1/models/apd-detector", False),  # v1 readiness
        ("/v2/models/apd-detector/ready", False),  # v2 readiness (the chart's probe)
        ("/v2/models/apd-detector/versions/3/ready", False),
        ("/v1/models/apd-detector:predict", True),
        ("/v1/models/apd-detector:explain", True),
        ("/v2/models/apd-detector/infer", True),
        ("/v2/models/apd-detector/versions/3/infer", True),
        ("/v2/models/apd-detector", True),  # model metadata
        ("/v2", True),  # server metadata
        ("/v1/models", True),  # the model list
        ("/v2/repository/models/apd-detector/load", True),
        ("/v2/health/live/../../models/apd-detector/infer", True),  # no way around it through an open prefix
        ("/docs", True),
    ],
)
def test_which_model_server_paths_need_a_key(path: str, needs: bool) -> None:
    assert model_server_needs_key(path) is needs


# ---- the ASGI middleware ----


@pytest.fixture
def app_with_keys(tmp_path: Path) -> TestClient:
    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("scored")

    guard, _ = _guard(_keys_file(tmp_path, alice=ALICE), Clock(), rate=1.0, burst=2)
    app = Starlette(
        routes=[Route("/score", ok, methods=["GET", "POST"]), Route("/healthz", ok)],
        middleware=[Middleware(ApiKeyMiddleware, guard=guard, needs_key=lambda path: path != "/healthz")],
    )
    return TestClient(app)


def test_the_middleware_answers_before_the_app(app_with_keys: TestClient) -> None:
    client = app_with_keys
    assert client.get("/healthz").text == "scored"  # open
    missing = client.post("/score", content=b"x" * 1000)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="apd"'
    assert "an API key is required" in missing.json()["error"]
    wrong = client.get("/score", headers={"X-API-Key": "wrong"})
    assert (wrong.status_code, wrong.json()) == (403, {"error": "the API key is not valid (unknown or revoked)"})
    assert client.get("/score", headers={"X-API-Key": ALICE}).text == "scored"
    assert client.get("/score", headers={"Authorization": f"Bearer {ALICE}"}).text == "scored"
    limited = client.get("/score", headers={"X-API-Key": ALICE})
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "1")
    assert "retry in 1 s" in limited.json()["error"]
