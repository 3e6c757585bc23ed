"""Data-parallel training: the train core (``components.train.train_detector``) in several processes at once.

``python -m components.train_ranks --spec '<json>'`` is one rank, started by torchrun: it joins torchrun's process
group, trains on its slice of every batch (``components.common.distributed``) and leaves the group. Rank 0 alone
resumes the MLflow run the train step created and writes the checkpoint.

``run_training`` is how the train step trains, from ``train_nodes`` and ``train_procs`` in the config:

- one process: the train core in the step's own process;
- one node, several processes: ``torchrun --standalone`` on this machine, a child process of the step;
- several nodes: the same torchrun command as a Kubeflow TrainJob (``components.trainjob``), whose rank 0 runs on
  another pod: the step fetches the checkpoint from the MLflow run it logged it to.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from mlflow.tracking import MlflowClient

from components.common.artifact import fetch_artifact
from components.common.dataset_files import DatasetImages
from components.common.distributed import process_group
from components.common.errors import TrainingJobError
from components.common.logging import configure_logging
from components.common.model_config import CHECKPOINT_FILE
from components.common.settings import Settings
from components.common.tracking import setup_tracking
from components.common.transforms import Augmentation
from components.train import TrainConfig, TrainResult, train_detector

log = structlog.get_logger(__name__)

# The settings sections a rank reads, passed to a TrainJob's pods as APD_<SECTION>__<FIELD> variables (the S3 keys
# excepted: components.trainjob gives the pods those from the cluster's Secret).
RANK_SETTINGS = ("images", "mlflow", "s3", "logging")
_SECRETS = {"access_key", "secret_key"}


@dataclass(frozen=True)
class RankSpec:
    """What every rank is told: the training config, where the dataset is (a folder, or its ``s3://`` URI for the
    pods of a TrainJob), the folder rank 0 writes the checkpoint to, the MLflow run rank 0 logs into, and the
    dataset version."""

    config: TrainConfig
    dataset: str
    out_dir: str
    run_id: str
    dataset_version: str

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RankSpec:
        """Inverse of ``to_json`` (JSON has lists where the augmentation has tuples)."""
        data = json.loads(text)
        config = data["config"]
        augmentation: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in config["augmentation"].items()
        }
        return cls(**{**data, "config": TrainConfig(**{**config, "augmentation": Augmentation(**augmentation)})})

    def train(self, settings: Settings) -> TrainResult:
        """The train core on this spec, in this process (the only one, or one rank of the process group)."""
        dataset = DatasetImages(self.dataset, settings.s3)
        return train_detector(
            self.config, dataset, Path(self.out_dir), settings.images, self.run_id, self.dataset_version
        )


def torchrun_command(spec: RankSpec) -> list[str]:
    """The torchrun command line that starts ``train_procs`` ranks of this module on each of ``train_nodes`` nodes:
    on one node with a rendezvous of its own (``--standalone``); on several with the one a TrainJob gives its pods
    (torchrun reads it from their PET_* variables)."""
    cfg = spec.config
    nodes = ["--standalone"] if cfg.train_nodes == 1 else [f"--nnodes={cfg.train_nodes}"]
    rank = ["-m", "components.train_ranks", "--spec", spec.to_json()]
    return ["torchrun", *nodes, f"--nproc-per-node={cfg.train_procs}", *rank]


def rank_env(settings: Settings) -> dict[str, str]:
    """The settings a rank reads (``RANK_SETTINGS``), as the environment variables that set them."""
    env = {}
    for section in RANK_SETTINGS:
        values = getattr(settings, section).model_dump(mode="json", exclude=_SECRETS)
        for name, value in values.items():
            if value is not None:
                env[f"APD_{section.upper()}__{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def run_training(spec: RankSpec, settings: Settings) -> None:
    """Train as ``spec.config`` lays the processes out (module docstring); the checkpoint ends in ``spec.out_dir``.

    Raises:
        TrainingJobError: torchrun or the TrainJob failed (the ranks' log says why); the MLflow run is marked failed.
    """
    cfg = spec.config
    if cfg.world_size == 1:
        spec.train(settings)
        return
    try:
        if cfg.train_nodes == 1:
            # torchrun is torch.distributed.run's console script; run by module, it needs no PATH to this venv.
            command = [sys.executable, "-m", "torch.distributed.run", *torchrun_command(spec)[1:]]
            done = subprocess.run(command, check=False)
            if done.returncode:
                raise TrainingJobError(
                    f"torchrun ({cfg.train_procs} training processes on this machine) exited with status "
                    f"{done.returncode}; the ranks' log above says why"
                )
        else:
            from components.trainjob import run_distributed

            remote = dataclasses.replace(spec, out_dir=str(Path(tempfile.gettempdir()) / "apd-train"))
            command = torchrun_command(remote)
            run_distributed(command, rank_env(settings), cfg.train_nodes, cfg.train_procs, settings=settings.trainjob)
            fetch_artifact(f"runs:/{spec.run_id}/checkpoint/{CHECKPOINT_FILE}", Path(spec.out_dir))
    except TrainingJobError:
        MlflowClient().set_terminated(spec.run_id, "FAILED")
        raise
    log.info("distributed_training_done", nodes=cfg.train_nodes, procs_per_node=cfg.train_procs, run_id=spec.run_id)


def main(argv: list[str] | None = None) -> None:
    """One rank: join torchrun's process group, train, leave it."""
    parser = argparse.ArgumentParser(description="One rank of data-parallel training, started by torchrun.")
    parser.add_argument("--spec", required=True, help="the RankSpec, as JSON")
    spec = RankSpec.from_json(parser.parse_args(argv).spec)
    settings = Settings()
    configure_logging(settings.logging)
    with process_group() as world:
        structlog.contextvars.bind_contextvars(rank=world.rank)
        if world.main:
            setup_tracking(settings.mlflow)
        spec.train(settings)


if __name__ == "__main__":
    main()
