"""The drill's own processes on loopback: free ports, ``apd`` children with a log each, waiting until they answer."""

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

APD = [sys.executable, "-m", "components.cli"]  # the `apd` command, as a child of this interpreter


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
    """GET (or POST ``body`` as JSON) to one of the drill's own loopback servers."""
    # S310: only http://127.0.0.1 URLs built by the drill itself reach here.
    request = urllib.request.Request(url, body, {"Content-Type": "application/json", **(headers or {})})  # noqa: S310
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
        return bytes(response.read())


def wait_for(url: str, what: str, process: subprocess.Popen[bytes] | None = None, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            http(url)
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}; see its log")
        time.sleep(0.5)
    raise TimeoutError(f"{what} did not come up at {url} in {seconds:.0f} s")


@contextlib.contextmanager
def running(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` in the background, its output in ``log``; terminated on the way out."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
