"""Running a test's DataLoader with forked workers in a fresh process, not in the pytest process.

A DataLoader worker forked from the pytest process (which holds servers' threads, OpenVINO's and torch's thread
pools, an S3 client's) made that process die of SIGSEGV, in the same test or a later one (reproduced in clean-clone
runs of `make test`; gdb showed an asynchronous SIGSEGV in the main thread, cause not found). Forked from a spawned
child, the workers test the same thing. Arguments and results travel by pickle: return numpy arrays, not tensors.
"""

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def in_spawned_child(function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` in a spawned process (``function`` importable at module level), whose DataLoaders fork
    their workers as they do in a training step."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_forking, function, *args).result()


def _forking(function: Callable[..., T], *args: object) -> T:
    multiprocessing.set_start_method("fork", force=True)  # a spawned child inherits "spawn" as its default
    return function(*args)
