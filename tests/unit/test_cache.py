"""The model server's result cache (``serving.cache``): keys, LRU bound, time to live, the off switch, workers."""

import pickle

import pytest

from components.common.protocol import Answer
from components.common.settings import CacheSettings
from serving.cache import ResultCache, cache_key

ANSWER = Answer(0.25, "real", "high", "3", 12.5, cached=False)


class Clock:
    """A settable monotonic clock, in seconds."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _cache(max_entries: int = 10, ttl_seconds: float = 60.0, enabled: bool = True) -> tuple[ResultCache, Clock]:
    clock = Clock()
    settings = CacheSettings(enabled=enabled, max_entries=max_entries, ttl_seconds=ttl_seconds)
    return ResultCache(settings, clock), clock


def test_the_defaults() -> None:
    """On by default, off by setting (APD_CACHE__ENABLED=false)."""
    assert CacheSettings() == CacheSettings(enabled=True, max_entries=10_000, ttl_seconds=3600.0)


@pytest.mark.parametrize(
    ("other", "same"),
    [
        ((b"image", "3", "openvino/fp32"), True),  # the same bytes, version and variant
        ((b"imagf", "3", "openvino/fp32"), False),  # one byte changed: another image
        ((b"image", "4", "openvino/fp32"), False),  # another model version
        ((b"image", "3", "openvino/bf16"), False),  # another variant of the same version
    ],
)
def test_the_key_is_the_bytes_the_model_version_and_the_variant(other: tuple[bytes, str, str], same: bool) -> None:
    assert (cache_key(b"image", "3", "openvino/fp32") == cache_key(*other)) is same


def test_a_stored_answer_is_found_and_a_missing_one_is_not() -> None:
    cache, _ = _cache()
    key = cache_key(b"image", "3", "openvino/fp32")
    assert cache.get(key) is None
    cache.put(key, ANSWER)
    assert cache.get(key) == ANSWER
    assert cache.get(cache_key(b"image", "4", "openvino/fp32")) is None
    assert len(cache) == 1


def test_the_least_recently_used_answer_goes_first() -> None:
    cache, _ = _cache(max_entries=2)
    a, b, c = (cache_key(name, "3", "openvino/fp32") for name in (b"a", b"b", b"c"))
    cache.put(a, ANSWER)
    cache.put(b, ANSWER)
    assert cache.get(a) == ANSWER  # a is now the most recently used
    cache.put(c, ANSWER)  # over the bound: b goes
    assert (cache.get(a), cache.get(b), cache.get(c)) == (ANSWER, None, ANSWER)
    assert len(cache) == 2


def test_an_answer_expires_after_its_time_to_live() -> None:
    """From the time it was stored: hits do not extend it."""
    cache, clock = _cache(ttl_seconds=60)
    key = cache_key(b"image", "3", "openvino/fp32")
    cache.put(key, ANSWER)
    clock.now += 59
    assert cache.get(key) == ANSWER
    clock.now += 1
    assert cache.get(key) is None
    assert len(cache) == 0  # dropped when found expired


def test_expired_answers_at_the_cold_end_go_on_the_next_store() -> None:
    cache, clock = _cache(ttl_seconds=60)
    cache.put(cache_key(b"old", "3", "openvino/fp32"), ANSWER)
    clock.now += 61
    cache.put(cache_key(b"new", "3", "openvino/fp32"), ANSWER)
    assert len(cache) == 1


def test_a_disabled_cache_stores_nothing() -> None:
    cache, _ = _cache(enabled=False)
    key = cache_key(b"image", "3", "openvino/fp32")
    cache.put(key, ANSWER)
    assert (cache.enabled, cache.get(key), len(cache)) == (False, None, 0)


def test_clear() -> None:
    cache, _ = _cache()
    cache.put(cache_key(b"image", "3", "openvino/fp32"), ANSWER)
    cache.clear()
    assert len(cache) == 0


def test_each_worker_process_starts_with_an_empty_cache_of_its_own() -> None:
    """``--workers N``: KServe pickles the loaded model (and its cache) into each worker; a lock cannot travel."""
    cache = ResultCache(CacheSettings(max_entries=5))
    cache.put(cache_key(b"image", "3", "openvino/fp32"), ANSWER)
    copy = pickle.loads(pickle.dumps(cache))
    assert (len(copy), copy.settings) == (0, cache.settings)
    copy.put(cache_key(b"image", "3", "openvino/fp32"), ANSWER)
    assert len(copy) == 1
