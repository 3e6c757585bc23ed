"""The drill's story in order (see the package's docstring): the datasets, the servers, the three phases, the table."""

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from components.common.demo_data import build_demo_dataset
from components.common.logging import configure_logging
from components.common.settings import DriftSettings, S3Settings, Settings
from components.monitoring.job import DriftJob, run_drift
from components.monitoring.result import DriftResult
from pipelines.incident import registry
from pipelines.incident.harness import APD, free_port, running, wait_for
from pipelines.incident.report import PhaseResult, scores, table
from pipelines.incident.retrain import Retrained, retrain, union
from pipelines.incident.traffic import Image, Traffic, interleave, labelled, settled

NEW_GENERATOR = "anime-2x"
CHUNK = 40  # images between two drift runs during the incident
MIN_RECORDS = 80  # the drill's windows are small; the default (200) suits hourly production traffic


@dataclass(frozen=True)
class Datasets:
    """The demo builds the drill reads."""

    demo: Path  # the champion's dataset: crops 0-15 of every photo, the default recipes
    fresh: Path  # crops 16-23, the default recipes: the real half of all traffic, the generated half of phase 1
    newgen: Path  # crops 24-27, the new generator: what the retraining adds
    newgen_fresh: Path  # crops 16-23, the new generator: the generated half of phases 2 and 3


def build_datasets(settings: Settings) -> Datasets:
    data = settings.data_dir
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
    return Datasets(demo, fresh, newgen, newgen_fresh)


@dataclass
class Drill:
    """The phases against a running sink: they serve a version, send it traffic and run the drift job on it."""

    settings: Settings
    work: Path  # logs, reports and the retraining source
    env: dict[str, str]  # the child processes' environment
    s3: S3Settings  # the embedded S3 server's
    drift_settings: DriftSettings
    sink_url: str
    http_port: int  # the model server's
    written: int = 0  # records sent to the sink so far: a drift run waits until it has written them all
    traffic: Traffic = field(init=False)

    def __post_init__(self) -> None:
        self.traffic = Traffic(self.server_url, self.sink_url, self.model)

    @property
    def model(self) -> str:
        return self.settings.serving.model_name

    @property
    def server_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @contextlib.contextmanager
    def serving(self, version: str) -> Iterator[None]:
        """``apd serve`` on the registered ``version``, ready for traffic."""
        command = [*APD, "serve", "--model_uri", f"models:/{self.model}/{version}", "--http_port", str(self.http_port),
                   "--grpc_port", str(free_port())]  # fmt: skip
        with running(command, self.env, self.work / f"serve-v{version}.log") as server:
            wait_for(f"{self.server_url}/v2/models/{self.model}/ready", "apd serve", server)
            yield

    def send(self, images: list[Image]) -> list[tuple[str, str]]:
        pairs = self.traffic.send(images)
        self.written += len(images)
        return pairs

    def drift(self, version: str, since: datetime) -> DriftResult:
        settled(self.sink_url, self.written)
        return run_drift(DriftJob(
            self.drift_settings, self.s3, self.settings.mlflow, self.settings.sink, self.model,
            model_version=version, endpoint="default", start=since, end=datetime.now(UTC) + timedelta(seconds=1),
            out_dir=self.work / "reports" / version,
        ))  # fmt: skip

    def before(self, champion: str, fresh: Path) -> PhaseResult:
        """Phase 1, ``champion`` served: traffic like the validation data, one drift run."""
        print(f"serving champion v{champion}; phase 1: traffic like the validation data", flush=True)
        since = datetime.now(UTC)
        pairs = self.send(interleave(labelled(fresh, ("val",))))
        return PhaseResult("before", champion, "fresh crops, trained recipes", len(pairs), *scores(pairs),
                           self.drift(champion, since))  # fmt: skip

    def during(self, champion: str, new_traffic: list[Image]) -> PhaseResult:
        """Phase 2, ``champion`` served: the new generator's traffic, a drift run every chunk until it alerts."""
        print(f"phase 2: a new generator ({NEW_GENERATOR}) in the traffic", flush=True)
        since, started = datetime.now(UTC), time.monotonic()
        pairs: list[tuple[str, str]] = []
        detection, result = "not detected", None
        for start in range(0, len(new_traffic), CHUNK):
            pairs += self.send(new_traffic[start : start + CHUNK])
            result = self.drift(champion, since)
            if result.alert and detection == "not detected":
                detection = f"{time.monotonic() - started:.0f} s, {len(pairs)} images"
        return PhaseResult("during", champion, f"the same real crops, {NEW_GENERATOR}", len(pairs), *scores(pairs),
                           result, detection)  # fmt: skip

    def after(
        self, champion: str, new_traffic: list[Image], sources: tuple[Path, ...]
    ) -> tuple[PhaseResult, Retrained]:
        """Phase 3: fine-tune ``champion`` on ``sources``, serve the new version the same new traffic."""
        print(f"phase 3: fine-tune v{champion} with the new generator's images", flush=True)
        source = union(self.work / "retrain-source", *sources)
        retrained = retrain(self.settings, champion, source, self.env, self.work / "retrain.log")
        with self.serving(retrained.version):
            since = datetime.now(UTC)
            pairs = self.send(new_traffic)
            return PhaseResult("after", retrained.version, f"the same new traffic ({retrained.how})", len(pairs),
                               *scores(pairs), self.drift(retrained.version, since)), retrained  # fmt: skip


def main() -> int:
    settings = Settings()
    configure_logging(settings.logging.model_copy(update={"level": "WARNING"}))
    # One bar per drift run's download; written, not read: MLflow takes this from the process environment.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # noqa: TID251
    work = settings.data_dir / "incident"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = build_datasets(settings)
    champion = registry.champion(settings)

    from moto.server import ThreadedMotoServer

    s3_port, sink_port, http_port = free_port(), free_port(), free_port()
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
        port = free_port()
        stack.enter_context(running([gateway, f"--web.listen-address=127.0.0.1:{port}"], env, work / "pg.log"))
        drift_settings = drift_settings.model_copy(update={"pushgateway_url": f"http://127.0.0.1:{port}"})
    sink_url = f"http://127.0.0.1:{sink_port}"
    real = labelled(data.fresh, ("val",), ("real",))
    new_traffic = interleave(real + labelled(data.newgen_fresh, ("val",), ("ai_generated",)))
    with stack, running([*APD, "sink", "--port", str(sink_port), "--host", "127.0.0.1"], env, work / "sink.log") as sk:
        wait_for(f"{sink_url}/healthz", "apd sink", sk)
        drill = Drill(settings, work, env, s3_settings, drift_settings, sink_url, http_port)
        with drill.serving(champion):
            results = [drill.before(champion, data.fresh), drill.during(champion, new_traffic)]
        after, retrained = drill.after(champion, new_traffic, (data.demo, data.newgen))
        results.append(after)
    s3.stop()
    print(table(results))
    if retrained.took_alias:
        new = retrained.version
        print(f"v{new} beat v{champion} on its test split and took the champion alias; the drill gave it back "
              f"to v{champion} so that a rerun starts from the same model (v{new} keeps challenger)")  # fmt: skip
    print(f"reports, logs and the retraining output: {work}")
    return 0
