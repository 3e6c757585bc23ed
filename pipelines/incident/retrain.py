"""The drill's recovery: the training pipeline, under KFP's local runner, fine-tunes the champion on the old dataset
and the new generator's images and registers a new version; the champion alias stays where the drill found it."""

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

from components.common.settings import Settings
from pipelines.incident.harness import APD
from pipelines.incident.registry import keep_champion, latest_version

# The retraining's pipeline parameters: fine-tune the champion (not a fresh ImageNet start), which keeps what it
# knows of the default recipes and real photos and only has to learn the new generator, in a few epochs at a lower
# learning rate; the quality gate at the demo dataset's level.
RETRAIN = {"epochs": 5, "lr": 3e-4, "warmup_epochs": 0.3, "patience": 3, "min_accuracy": 0.6, "min_f1": 0.6}


class Retrained(NamedTuple):
    version: str  # the version the pipeline registered
    took_alias: bool  # it beat the champion and took its alias (the drill gave it back)
    how: str  # "fine-tuned from v<champion> in <minutes> min"


def union(out: Path, *roots: Path) -> Path:
    """One class-folder tree of several demo builds (hard links): the retraining source."""
    shutil.rmtree(out, ignore_errors=True)
    for root in roots:
        for path in root.rglob("*.jpg"):
            target = out / path.relative_to(root).parent / f"{root.name}_{path.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)
    return out


def retrain(settings: Settings, champion: str, source: Path, env: dict[str, str], log: Path) -> Retrained:
    """Run the pipeline on ``source`` from ``champion`` (``apd pipeline run --local``), its output in ``log``."""
    params = {**RETRAIN, "init_model": f"models:/{settings.mlflow.model_name}/{champion}"}
    command = [*APD, "pipeline", "run", "--local", "--source", str(source)]
    command += [arg for name, value in params.items() for arg in ("-p", f"{name}={value}")]
    started = time.monotonic()
    run = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    log.write_text(run.stdout + run.stderr)
    if run.returncode != 0:
        raise SystemExit(f"retraining failed; see {log}")
    version = latest_version(settings)
    took_alias = keep_champion(settings, champion)
    return Retrained(version, took_alias, f"fine-tuned from v{champion} in {(time.monotonic() - started) / 60:.0f} min")
