"""Loopback ports and waiting for a server that a test started."""

import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(process: subprocess.Popen[bytes], log: Path, *urls: str, seconds: float, poll: float) -> None:
    """Return once every URL answers 2xx; fail with the process's log when it exits or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            for url in urls:
                urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:  # refused, reset, or an HTTP error (not ready yet)
            assert process.poll() is None, log.read_text()
            time.sleep(poll)
    raise TimeoutError(log.read_text())
