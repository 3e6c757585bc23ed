"""Who may call the model server and the web page: API keys kept only as SHA-256 hashes, and a rate limit per key.

The keys file (``APD_AUTH__KEYS_FILE``; on a cluster a mounted Secret) holds one key per line, ``NAME:SHA256HEX``:
the name labels the key in the log and its rate-limit bucket, the hash is the SHA-256 of the key's UTF-8 bytes
(``apd auth hash-key --name NAME`` reads the key on stdin and prints the line). Blank lines and ``#`` comments are
skipped. The file is checked for changes at most every ``reload_seconds`` and re-read when its mtime, size or inode
changed (a Kubernetes Secret update swaps the mounted file): a removed line is a revoked key, without a restart. A
file that cannot be read or parsed after the start leaves no key valid until it is fixed (a typo never keeps a
revoked key alive); at the start it is an error.

A request presents its key as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>`` (X-API-Key wins when both
are there, so that a mesh's JWT can travel in Authorization); over gRPC as metadata ``x-api-key`` or
``authorization``. The key is hashed and compared with every stored hash in constant time (``hmac.compare_digest``).
Outcomes: ``missing`` (HTTP 401, gRPC UNAUTHENTICATED), ``invalid`` (403, PERMISSION_DENIED), ``rate_limited``
(429 with ``Retry-After``, RESOURCE_EXHAUSTED with ``retry-after`` trailing metadata) and ``ok``; each is counted in
``apd_auth_requests_total{outcome}``. Rate limit: a token bucket per key name, ``rate_per_second`` refilled up to
``burst``, per server process.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import structlog
from prometheus_client import Counter
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from components.common.errors import KeyFileError
from components.common.settings import AuthSettings
from serving import metrics

log = structlog.get_logger(__name__)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
# The model server's endpoints that stay open: KServe's liveness and readiness (the kubelet's probes, Knative's,
# `helm test`), and /metrics (Prometheus scrapes it). The readiness patterns route nowhere else in KServe 0.21:
# ``/v1/models/<name>`` without a ':' is the v1 readiness, ``.../ready`` the v2 one.
MODEL_SERVER_OPEN = re.compile(
    r"^/(metrics|v2/health/(live|ready)|v1/models/[^/:]+|v2/models/[^/]+(/versions/[^/]+)?/ready)?$"
)
Clock = Callable[[], float]


def model_server_needs_key(path: str) -> bool:
    """Every model-server path but liveness, readiness and /metrics needs a key."""
    return MODEL_SERVER_OPEN.match(path) is None


class Outcome(StrEnum):
    """What became of a request that needs a key."""

    OK = "ok"
    MISSING = "missing"  # no key: HTTP 401, gRPC UNAUTHENTICATED
    INVALID = "invalid"  # a key that is not in the file (wrong, or revoked): 403, PERMISSION_DENIED
    RATE_LIMITED = "rate_limited"  # a valid key over its rate: 429, RESOURCE_EXHAUSTED


HTTP_STATUS = {Outcome.MISSING: 401, Outcome.INVALID: 403, Outcome.RATE_LIMITED: 429}


def hash_key(key: str) -> str:
    """The SHA-256 of the key's UTF-8 bytes, as 64 lowercase hex digits (what the keys file stores)."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_line(name: str, key: str) -> str:
    """``NAME:SHA256HEX``, the keys file's line for ``key``."""
    if not NAME.match(name):
        raise KeyFileError(f"invalid key name {name!r}: 1-64 letters, digits, '.', '_', '@' or '-'")
    if not key:
        raise KeyFileError("the key is empty")
    return f"{name}:{hash_key(key)}"


def parse_keys(text: str, source: str) -> dict[str, bytes]:
    """The keys file's text -> key name -> SHA-256 digest. KeyFileError names the line that is wrong."""
    keys: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source} line {number}"
        name, colon, digest = (part.strip() for part in line.partition(":"))
        if not colon:
            raise KeyFileError(f"{where}: expected NAME:SHA256HEX (what `apd auth hash-key --name NAME` prints)")
        if not NAME.match(name):
            raise KeyFileError(f"{where}: a key name is 1-64 letters, digits, '.', '_', '@' or '-'")
        if not SHA256_HEX.match(digest.lower()):
            raise KeyFileError(
                f"{where}: the hash of {name!r} is not 64 hex digits: store the SHA-256 of the key (`apd auth "
                "hash-key`), never the key itself"
            )
        if name in keys:
            raise KeyFileError(f"{where}: the name {name!r} is listed twice")
        value = bytes.fromhex(digest)
        if value in keys.values():
            raise KeyFileError(f"{where}: {name!r} has the hash of a key listed above (one key, one name)")
        keys[name] = value
    return keys


class KeyStore:
    """The accepted keys' hashes, re-read when the file changes (checked at most every ``reload_seconds``)."""

    def __init__(self, path: Path, reload_seconds: float, clock: Clock = time.monotonic) -> None:
        self.path, self.reload_seconds, self.clock = path, reload_seconds, clock
        self._signature = self._stat()
        try:
            self.keys = parse_keys(path.read_text(), str(path))
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"cannot read the keys file {path}: {exc}") from exc
        self._checked = clock()
        self._loaded(None)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _loaded(self, before: set[str] | None) -> None:
        """Log the keys now accepted; on a reload, the names added and removed (a revocation is a removed name)."""
        changes = {}
        if before is not None:
            changes = {"added": sorted(self.keys.keys() - before), "removed": sorted(before - self.keys.keys())}
        log.info("auth_keys_loaded", keys_file=str(self.path), keys=len(self.keys), **changes)
        if not self.keys:
            log.warning("auth_no_keys", keys_file=str(self.path), effect="every request that needs a key gets 403")

    def refresh(self) -> None:
        """Re-read the file if it changed since the last look, at most every ``reload_seconds``."""
        now = self.clock()
        if now - self._checked < self.reload_seconds:
            return
        self._checked = now
        signature = self._stat()
        if signature == self._signature:
            return
        self._signature = signature
        before = set(self.keys)
        try:
            self.keys = parse_keys(self.path.read_text(), str(self.path))
        except (OSError, UnicodeDecodeError, KeyFileError) as exc:
            self.keys = {}
            log.error("auth_keys_unreadable", keys_file=str(self.path), error=str(exc), effect="no key is valid")
            return
        self._loaded(before)

    def name_of(self, key: str) -> str | None:
        """The name of ``key`` if the file lists its hash, else None. Compares with every stored hash in constant
        time, without stopping at a match."""
        self.refresh()
        digest = hashlib.sha256(key.encode()).digest()
        found = None
        for name, stored in self.keys.items():
            if hmac.compare_digest(digest, stored):
                found = name
        return found


@dataclass
class TokenBucket:
    """``rate`` tokens a second, up to ``burst``; a request takes one."""

    rate: float
    burst: int
    tokens: float
    stamp: float

    def take(self, now: float) -> float:
        """0.0 when a token was taken; else the seconds until one is there (nothing taken)."""
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """One token bucket per key name, full at a key's first request; ``rate == 0``: no limit."""

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.buckets: dict[str, TokenBucket] = {}

    def wait(self, name: str) -> float:
        """0.0 when ``name`` may make a request now (and it is counted), else the seconds until it may."""
        if self.rate == 0:
            return 0.0
        now = self.clock()
        bucket = self.buckets.get(name)
        if bucket is None:
            bucket = self.buckets[name] = TokenBucket(self.rate, self.burst, float(self.burst), now)
        return bucket.take(now)


@dataclass(frozen=True)
class Decision:
    """The answer to one request that needs a key."""

    outcome: Outcome
    message: str  # for the caller: what was wrong and what to do
    key_name: str | None = None  # the key's name in the keys file (never the key)
    retry_after: int = 0  # rate_limited: whole seconds until the key's next request is accepted


def presented_key(api_key: str | None, authorization: str | None) -> str | None:
    """The key a request presents: its X-API-Key, else the token of ``Authorization: Bearer``; None if neither."""
    if api_key and api_key.strip():
        return api_key.strip()
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


class Guard:
    """Decides, counts and (for limited keys) logs each request that needs a key. One per server process, shared by
    its REST and gRPC servers."""

    def __init__(self, settings: AuthSettings, counter: Counter = metrics.AUTH_REQUESTS, clock: Clock = time.monotonic):
        if settings.keys_file is None:
            raise KeyFileError("API keys are on but no keys file is set (APD_AUTH__KEYS_FILE)")
        self.settings = settings
        self.keys = KeyStore(settings.keys_file, settings.reload_seconds, clock)
        self.limiter = RateLimiter(settings.rate_per_second, settings.burst, clock)
        self._counts = {outcome: counter.labels(outcome=outcome.value) for outcome in Outcome}  # all shown from 0
        self._limited: set[str] = set()  # keys refused for their rate since their last accepted request
        self._lock = threading.Lock()  # the REST event loop and gRPC's may call at once

    def check(self, key: str | None) -> Decision:
        """The decision on a request presenting ``key`` (None: it presented none)."""
        with self._lock:
            decision = self._decide(key)
        self._counts[decision.outcome].inc()
        return decision

    def _decide(self, key: str | None) -> Decision:
        if key is None:
            return Decision(
                Outcome.MISSING, "an API key is required: send it as X-API-Key: <key> or Authorization: Bearer <key>"
            )
        name = self.keys.name_of(key)
        if name is None:
            return Decision(Outcome.INVALID, "the API key is not valid (unknown or revoked)")
        wait = self.limiter.wait(name)
        if wait == 0.0:
            self._limited.discard(name)
            return Decision(Outcome.OK, "", name)
        retry_after = max(1, math.ceil(wait))
        if name not in self._limited:  # once per episode, not per refused request
            self._limited.add(name)
            rate, burst = self.settings.rate_per_second, self.settings.burst
            log.warning("auth_rate_limited", key_name=name, rate_per_second=rate, burst=burst)
        message = (
            f"rate limit of key {name!r} reached ({self.settings.rate_per_second:g} requests/s, burst "
            f"{self.settings.burst}): retry in {retry_after} s"
        )
        return Decision(Outcome.RATE_LIMITED, message, name, retry_after)


class ApiKeyMiddleware:
    """ASGI middleware: a request to a path for which ``needs_key(path)`` is true reaches the app only with a valid
    key within its rate; otherwise it is answered here, ``{"error": "..."}`` with 401, 403 or 429 (``Retry-After``)."""

    def __init__(self, app: ASGIApp, guard: Guard, needs_key: Callable[[str], bool]) -> None:
        self.app, self.guard, self.needs_key = app, guard, needs_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.needs_key(scope["path"]):
            await self.app(scope, receive, send)
            return
        api_key = authorization = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                api_key = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        decision = self.guard.check(presented_key(api_key, authorization))
        if decision.outcome is Outcome.OK:
            await self.app(scope, receive, send)
            return
        headers = {}
        if decision.outcome is Outcome.MISSING:
            headers["WWW-Authenticate"] = 'Bearer realm="apd"'
        if decision.outcome is Outcome.RATE_LIMITED:
            headers["Retry-After"] = str(decision.retry_after)
        response = JSONResponse({"error": decision.message}, HTTP_STATUS[decision.outcome], headers)
        await response(scope, receive, send)
