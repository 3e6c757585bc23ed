"""The local servers the integration tests start: `apd serve` in a subprocess, and an S3 server (moto)."""

import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from components.common.settings import S3Settings
from tests.helpers.net import free_port, wait_until_up

MODEL = "apd-detector"  # the name `apd serve` serves the model under (the URL paths)


class ModelServer:
    """`apd serve` (or ``command="explain"``: `apd explain`, the explainer) in a subprocess on free loopback ports,
    its log in ``tmp``."""

    def __init__(
        self,
        tmp: Path,
        model_uri: str,
        env: dict[str, str] | None = None,
        workers: int = 1,
        *,
        ready: bool = True,
        command: str = "serve",
    ) -> None:
        """Start it and wait until it answers: live, and with workers the model ready too (``ready=False`` for a
        model meant to fail its load)."""
        self.http, self.grpc = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http}"
        self.log = (tmp / f"server-{self.http}.log").open("w")
        argv = [sys.executable, "-m", "components.cli", command, "--model_uri", model_uri,
                "--http_port", str(self.http), "--grpc_port", str(self.grpc), "--workers", str(workers)]  # fmt: skip
        full_env = {**os.environ, "APD_SERVING__DOWNLOAD_DIR": str(tmp / "downloads"), **(env or {})}
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=full_env)
        # With workers, each one must have unpickled the model and opened its session: ready, not only live (two
        # workers loading under load on 2 cores can take a while).
        ready_url = [f"{self.url}/v2/models/{MODEL}/ready"] if workers > 1 and ready else []
        urls = [f"{self.url}/v2/health/live", *ready_url]
        try:
            wait_until_up(self.process, Path(self.log.name), *urls, seconds=240, poll=0.5)
        except BaseException:  # not up in time: no server left running behind the failed test
            self.stop()
            raise

    def call(self, method: str, path: str, body: object = None, raw: bytes | None = None) -> tuple[int, Any]:
        """The status and the answer (parsed JSON, else text) of one HTTP request; an HTTP error is an answer."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                text = response.read().decode()
                return response.status, json.loads(text) if text.startswith(("{", "[")) else text
        except urllib.error.HTTPError as exc:
            text = exc.read().decode()
            return exc.code, json.loads(text) if text.startswith("{") else text

    def log_text(self) -> str:
        """What the server has logged so far."""
        self.log.flush()
        return Path(self.log.name).read_text()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self.log.close()


@contextlib.contextmanager
def empty_s3_server() -> Iterator[S3Settings]:
    """A moto S3 server on a free loopback port, emptied first: moto keeps buckets per process, across servers, so
    an earlier test's records would otherwise show up in this one's bucket. It accepts any credentials."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    reset = urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/reset", method="POST")
    with urllib.request.urlopen(reset, timeout=10):
        pass
    try:
        yield S3Settings(endpoint=f"127.0.0.1:{port}", access_key="test-access", secret_key="test-secret")
    finally:
        server.stop()


def upload_folder(s3: S3Settings, folder: Path, bucket: str, prefix: str) -> None:
    """Every file below ``folder`` to ``s3://bucket/prefix/<its path below folder>``, the bucket made when new."""
    client = s3.client()
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.fput_object(bucket, f"{prefix}/{path.relative_to(folder).as_posix()}", str(path))
