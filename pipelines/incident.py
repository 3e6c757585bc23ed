"""The drift incident drill (``make incident``): a new image generator appears, the detector drifts, the drift job
raises the alert, a retrained model recovers.

Everything runs embedded on this machine, with the real pieces: the registered champion behind ``apd serve``
(KServe's ModelServer), the payload sink ``apd sink`` writing to an S3 server on loopback (moto), the drift job
(``components.monitoring.job.run_drift``: Evidently, MLflow, a Pushgateway when Debian's ``prometheus-pushgateway`` is
installed) and the training pipeline under KFP's local runner. Without a cluster there is no KServe logger, so
the drill plays its part: every request it sends to the model server is then posted to the sink as the two
binary-mode CloudEvents (request, response) that KServe's logger would send.

1. before: traffic like the data the model was validated on: fresh crops (never seen in training or validation) of
   the validation split's photos, with their twins from the demo's default mix of Real-ESRGAN recipes, the
   generators the model was trained on
2. during: the same real crops, but their generated twins now come from a generator the model never saw
   (``NEW_GENERATOR``: another network, at another scale, see ``demo_data.GENERATORS``); the drift job runs after
   every chunk of traffic until it alerts (time to detection, in seconds and requests)
3. after: the new generator's images (other crops of the same photos) are ingested next to the old dataset, the
   pipeline fine-tunes the champion on both and registers a new version, which serves the same new traffic.

Prints a before / during / after table: accuracy, false negative rate, drift signals, alert, time to detection.
"""

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from components.common import protocol
from components.common.demo_data import build_demo_dataset
from components.common.logging import configure_logging
from components.common.settings import Settings
from components.common.tracking import setup_tracking
from components.monitoring.job import DriftJob, run_drift
from components.monitoring.result import DriftResult
from serving.sink_events import REQUEST_TYPE, RESPONSE_TYPE

NEW_GENERATOR = "anime-2x"
CHUNK = 40  # images between two drift runs during the incident
BATCH = 8  # images per inference request
MIN_RECORDS = 80  # the drill's windows are small; the default (200) suits hourly production traffic
# The retraining's pipeline parameters: fine-tune the champion (not a fresh ImageNet start), which keeps what it
# knows of the default recipes and real photos and only has to learn the new generator, in a few epochs at a lower
# learning rate; the quality gate at the demo dataset's level.
RETRAIN = {"epochs": 5, "lr": 3e-4, "warmup_epochs": 0.3, "patience": 3, "min_accuracy": 0.6, "min_f1": 0.6}
Image = tuple[Path, str]  # file, true label


@dataclass
class PhaseResult:
    name: str
    model_version: str
    traffic: str
    images: int
    accuracy: float
    false_negative_rate: float
    drift: DriftResult | None
    detection: str = ""


def _images(root: Path, splits: tuple[str, ...], labels: tuple[str, ...] = ("real", "ai_generated")) -> list[Image]:
    return [(p, label) for split in splits for label in labels for p in sorted((root / split / label).rglob("*.jpg"))]


def _interleave(images: list[Image]) -> list[Image]:
    """Real and generated alternate, as they would in live traffic (a stable order: the drill is repeatable)."""
    real = [i for i in images if i[1] == "real"]
    fake = [i for i in images if i[1] != "real"]
    out: list[Image] = []
    for k in range(max(len(real), len(fake))):
        out += real[k : k + 1] + fake[k : k + 1]
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(url: str, what: str, process: subprocess.Popen[bytes] | None = None, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            _http(url)
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}; see its log")
        time.sleep(0.5)
    raise TimeoutError(f"{what} did not come up at {url} in {seconds:.0f} s")


@contextlib.contextmanager
def _process(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)


class Traffic:
    """Sends images to the model server over v2 REST and logs each exchange to the sink as KServe's logger does."""

    def __init__(self, server: str, sink: str, model: str) -> None:
        self.server, self.sink, self.model = server, sink, model

    def send(self, images: list[Image], endpoint: str = "default") -> list[tuple[str, str]]:
        """(true label, predicted label) per image."""
        pairs = []
        for start in range(0, len(images), BATCH):
            batch = images[start : start + BATCH]
            request_id = str(uuid.uuid4())
            body = json.dumps(protocol.v2_request([path.read_bytes() for path, _ in batch], request_id)).encode()
            response = _http(f"{self.server}/v2/models/{self.model}/infer", body, {})
            for kind, payload in ((REQUEST_TYPE, body), (RESPONSE_TYPE, response)):
                _http(self.sink, payload, self._cloudevent(request_id, kind, endpoint))
            labels = next(o for o in json.loads(response)["outputs"] if o["name"] == "label")["data"]
            pairs += [(truth, predicted) for (_, truth), predicted in zip(batch, labels, strict=True)]
        return pairs

    def _cloudevent(self, request_id: str, kind: str, endpoint: str) -> dict[str, str]:
        return {
            "ce-id": request_id,
            "ce-type": kind,
            "ce-specversion": "1.0",
            "ce-source": f"http://localhost/{self.model}-predictor",
            "ce-time": datetime.now(UTC).isoformat(),
            "ce-inferenceservicename": self.model,
            "ce-namespace": "drill",
            "ce-endpoint": endpoint,
            "ce-component": "predictor",
        }


def _http(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
    """GET (or POST ``body`` as JSON) to one of the drill's own loopback servers."""
    # S310: only http://127.0.0.1 URLs built by the drill itself reach here.
    request = urllib.request.Request(url, body, {"Content-Type": "application/json", **(headers or {})})  # noqa: S310
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
        return bytes(response.read())


def _settled(sink: str, expected_records: int, seconds: float = 120) -> None:
    """Wait until the sink has written ``expected_records`` records in all and holds nothing unwritten."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = _http(f"{sink}/metrics").decode()
        values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("apd_sink")}
        backlog = values.get("apd_sink_wal_events", 0)
        if values.get("apd_sink_records_written_total", 0) >= expected_records and not backlog:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the sink did not write {expected_records} records in {seconds:.0f} s")


def _scores(pairs: list[tuple[str, str]]) -> tuple[float, float]:
    accuracy = sum(truth == predicted for truth, predicted in pairs) / len(pairs)
    fakes = [predicted for truth, predicted in pairs if truth == "ai_generated"]
    return accuracy, sum(p == "real" for p in fakes) / max(1, len(fakes))


def _union(out: Path, *roots: Path) -> Path:
    """One class-folder tree of several demo builds (hard links): the retraining source."""
    shutil.rmtree(out, ignore_errors=True)
    for root in roots:
        for path in root.rglob("*.jpg"):
            target = out / path.relative_to(root).parent / f"{root.name}_{path.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)
    return out


def _champion(settings: Settings) -> str:
    import mlflow
    from mlflow.exceptions import MlflowException

    setup_tracking(settings.mlflow)
    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(settings.mlflow.model_name, "champion").version)
    except MlflowException:
        raise SystemExit("no champion registered: run `make demo` first") from None


def _keep_champion(settings: Settings, champion: str) -> bool:
    """Point the champion alias back at the drill's starting model if the retraining moved it (True then)."""
    import mlflow

    if _champion(settings) == champion:
        return False
    mlflow.MlflowClient().set_registered_model_alias(settings.mlflow.model_name, "champion", champion)
    return True


def _latest_version(settings: Settings) -> str:
    import mlflow

    versions = mlflow.MlflowClient().search_model_versions(f"name = '{settings.mlflow.model_name}'")
    return str(max(int(v.version) for v in versions))


def main() -> int:  # noqa: PLR0915 - one story, told in order
    settings = Settings()
    configure_logging(settings.logging.model_copy(update={"level": "WARNING"}))
    # One bar per drift run's download; written, not read: MLflow takes this from the process environment.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # noqa: TID251
    data = settings.data_dir
    work = data / "incident"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    demo = build_demo_dataset(data / "demo", seed=settings.seed).out_dir
    print("building fresh crops and the new generator's images ...", flush=True)
    fresh = build_demo_dataset(data / "demo-fresh", seed=settings.seed, crops_per_photo=8, first_crop=16).out_dir
    # The demo holds crops 0-15 of every photo; the new traffic uses crops 16-23, as phase 1 does; the retraining
    # gets the new generator's twins of crops 24-27, which neither of them holds.
    newgen = build_demo_dataset(
        data / "demo-newgen", seed=settings.seed, crops_per_photo=4, first_crop=24, generator=NEW_GENERATOR
    ).out_dir
    newgen_fresh = build_demo_dataset(
        data / "demo-newgen-fresh", seed=settings.seed, crops_per_photo=8, first_crop=16, generator=NEW_GENERATOR
    ).out_dir
    champion = _champion(settings)
    model = settings.serving.model_name

    from moto.server import ThreadedMotoServer

    s3_port, sink_port, http_port = _free_port(), _free_port(), _free_port()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the S3 server's access log
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port)
    s3.start()
    # The embedded S3 server checks no credentials; these placeholders only satisfy the clients. The child processes
    # (apd, the servers) inherit this environment, with the drill's settings on top.
    env = {
        **os.environ,  # noqa: TID251
        "APD_S3__ENDPOINT": f"127.0.0.1:{s3_port}",
        "APD_S3__ACCESS_KEY": "drill",
        "APD_S3__SECRET_KEY": "drill",
        "APD_SINK__WAL_DIR": str(work / "wal"),
        "APD_SINK__FLUSH_SECONDS": "1",
        "APD_SINK__PAIR_TIMEOUT_SECONDS": "5",
        "APD_LOGGING__LEVEL": "WARNING",
        "APD_SERVING__DOWNLOAD_DIR": str(work / "models"),
    }
    s3_settings = settings.s3.model_copy(
        update={"endpoint": f"127.0.0.1:{s3_port}", "access_key": "drill", "secret_key": "drill"}
    )
    drift_settings = settings.drift.model_copy(update={"min_records": MIN_RECORDS})
    stack = contextlib.ExitStack()
    gateway = shutil.which("prometheus-pushgateway")
    if gateway:
        port = _free_port()
        stack.enter_context(_process([gateway, f"--web.listen-address=127.0.0.1:{port}"], env, work / "pg.log"))
        drift_settings = drift_settings.model_copy(update={"pushgateway_url": f"http://127.0.0.1:{port}"})
    apd = [sys.executable, "-m", "components.cli"]
    sink_url, server_url = f"http://127.0.0.1:{sink_port}", f"http://127.0.0.1:{http_port}"
    written = 0

    def drift(version: str, since: datetime) -> DriftResult:
        _settled(sink_url, written)
        return run_drift(DriftJob(
            drift_settings, s3_settings, settings.mlflow, settings.sink, model,
            model_version=version, endpoint="default", start=since, end=datetime.now(UTC) + timedelta(seconds=1),
            out_dir=work / "reports" / version,
        ))  # fmt: skip

    def serve(version: str) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
        command = [*apd, "serve", "--model_uri", f"models:/{model}/{version}", "--http_port", str(http_port),
                   "--grpc_port", str(_free_port())]  # fmt: skip
        return _process(command, env, work / f"serve-v{version}.log")

    results: list[PhaseResult] = []
    real = _images(fresh, ("val",), ("real",))
    new_traffic = _interleave(real + _images(newgen_fresh, ("val",), ("ai_generated",)))
    with stack, _process([*apd, "sink", "--port", str(sink_port), "--host", "127.0.0.1"], env, work / "sink.log") as sk:
        _wait(f"{sink_url}/healthz", "apd sink", sk)
        traffic = Traffic(server_url, sink_url, model)
        with serve(champion) as server:
            _wait(f"{server_url}/v2/models/{model}/ready", "apd serve", server)
            print(f"serving champion v{champion}; phase 1: traffic like the validation data", flush=True)
            since = datetime.now(UTC)
            before = _interleave(_images(fresh, ("val",)))
            pairs = traffic.send(before)
            written += len(before)
            results.append(PhaseResult("before", champion, "fresh crops, trained recipes", len(pairs), *_scores(pairs),
                                       drift(champion, since)))  # fmt: skip

            print(f"phase 2: a new generator ({NEW_GENERATOR}) in the traffic", flush=True)
            since, started = datetime.now(UTC), time.monotonic()
            pairs, detection, result = [], "not detected", None
            for start in range(0, len(new_traffic), CHUNK):
                chunk = new_traffic[start : start + CHUNK]
                pairs += traffic.send(chunk)
                written += len(chunk)
                result = drift(champion, since)
                if result.alert and detection == "not detected":
                    detection = f"{time.monotonic() - started:.0f} s, {len(pairs)} images"
            results.append(PhaseResult("during", champion, f"the same real crops, {NEW_GENERATOR}", len(pairs),
                                       *_scores(pairs), result, detection))  # fmt: skip

        print(f"phase 3: fine-tune v{champion} with the new generator's images", flush=True)
        source = _union(work / "retrain-source", demo, newgen)
        params = {**RETRAIN, "init_model": f"models:/{settings.mlflow.model_name}/{champion}"}
        command = [*apd, "pipeline", "run", "--local", "--source", str(source)]
        command += [arg for name, value in params.items() for arg in ("-p", f"{name}={value}")]
        started = time.monotonic()
        run = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        (work / "retrain.log").write_text(run.stdout + run.stderr)
        if run.returncode != 0:
            raise SystemExit(f"retraining failed; see {work / 'retrain.log'}")
        retrained = _latest_version(settings)
        kept = _keep_champion(settings, champion)
        retraining = f"fine-tuned from v{champion} in {(time.monotonic() - started) / 60:.0f} min"
        with serve(retrained) as server:
            _wait(f"{server_url}/v2/models/{model}/ready", "apd serve", server)
            since = datetime.now(UTC)
            pairs = traffic.send(new_traffic)
            written += len(new_traffic)
            results.append(PhaseResult("after", retrained, f"the same new traffic ({retraining})", len(pairs),
                                       *_scores(pairs), drift(retrained, since)))  # fmt: skip
    s3.stop()
    print(_table(results, drift_settings))
    if kept:
        print(f"v{retrained} beat v{champion} on its test split and took the champion alias; the drill gave it back "
              f"to v{champion} so that a rerun starts from the same model (v{retrained} keeps challenger)")  # fmt: skip
    print(f"reports, logs and the retraining output: {work}")
    return 0


def _table(results: list[PhaseResult], drift_settings: Any) -> str:
    lines = [
        "| phase | model | traffic | images | accuracy | false negative rate | drift share | mean p shift "
        "| confidence drop | alert | time to detection |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in results:
        s = r.drift.signals if r.drift else None
        share = f"{s.drift_share:.2f}" if s else "-"
        shift = f"{s.mean_probability_shift:+.3f}" if s else "-"
        drop = f"{s.confidence_drop:+.1%}" if s else "-"
        verdict = r.drift.verdict if r.drift else "-"
        lines.append(
            f"| {r.name} | v{r.model_version} | {r.traffic} | {r.images} | {r.accuracy:.3f} "
            f"| {r.false_negative_rate:.3f} | {share} | {shift} | {drop} | {verdict} | {r.detection} |"
        )
    why = [f"- {r.name}: {'; '.join(r.drift.alerts)}" for r in results if r.drift and r.drift.alerts]
    return "\n".join([*lines, "", *why] if why else lines)


if __name__ == "__main__":
    sys.exit(main())
