"""The project's images run with podman as the Helm chart runs them: uid 10001, read-only root, a tmpfs on /tmp.

Used by the image tests (tests/integration/test_images.py) and the cold-start benchmark (tests/bench/bench_images.py).
"""

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers.net import free_port

VERSION = "0.1.0"
SERVING, COMPONENTS = f"apd-serving:{VERSION}", f"apd-components:{VERSION}"
MODEL = "apd-detector"
# How podman runs on these machines (runc; the default ulimits are above what this kernel grants).
RUN = ["run", "--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
# As the chart's securityContext: non-root uid, read-only root filesystem, a writable /tmp.
LOCKED_DOWN = ["--user", "10001", "--read-only", "--tmpfs", "/tmp"]


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check, timeout=timeout)


def call(url: str, body: object | None = None) -> tuple[int, Any]:
    """The status and the parsed JSON answer of one HTTP request (the text of an error answer)."""
    request = urllib.request.Request(
        url, data=None if body is None else json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Container:
    """A model server of the project's images (``apd serve`` in the predictor image, or ``apd explain`` in the
    component image) serving ``models`` (mounted read-only at /mnt/models) on free loopback ports of the host
    network; ``cold_start`` is the time from ``podman run`` to the model's readiness."""

    def __init__(self, models: Path, image: str = SERVING, command: str = "serve", env: dict[str, str] | None = None):
        self.http, grpc = free_port(), free_port()
        self.url, self.name = f"http://127.0.0.1:{self.http}", f"apd-{command}-test-{self.http}"
        entry = ["apd"] if image == COMPONENTS else []  # the predictor image's entrypoint is apd
        environment = [f"--env={key}={value}" for key, value in (env or {}).items()]
        started = time.monotonic()
        podman(*RUN, "--detach", "--name", self.name, *LOCKED_DOWN, "--network", "host", *environment,
               "--volume", f"{models}:/mnt/models:ro", image, *entry, command, "--model_uri", "/mnt/models",
               "--http_port", str(self.http), "--grpc_port", str(grpc))  # fmt: skip
        deadline = started + 300
        while time.monotonic() < deadline:
            try:
                if call(f"{self.url}/v2/models/{MODEL}/ready")[0] == 200:
                    self.cold_start = time.monotonic() - started
                    return
            except (urllib.error.URLError, ConnectionError):
                pass
            state = podman("inspect", "--format", "{{.State.Running}}", self.name).stdout.strip()
            if state != "true":
                raise RuntimeError(f"{self.name} stopped before its model was ready:\n{self.logs()}")
            time.sleep(0.05)
        raise TimeoutError(self.logs())

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def stop(self) -> None:
        podman("rm", "--force", "--time", "10", self.name, check=False)
