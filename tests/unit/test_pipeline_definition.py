"""The compiled pipeline YAMLs (training, batch scoring) are current, run parameters typed and checked, resources."""

from pathlib import Path

import pytest
import yaml

from pipelines.kubeflow import (
    COMPILED_BATCH_PIPELINE,
    COMPILED_PIPELINE,
    compile_batch_pipeline,
    compile_pipeline,
    parse_params,
)
from pipelines.training import TrainResources, training_pipeline


def test_committed_pipeline_yaml_is_current(tmp_path: Path) -> None:
    fresh = compile_pipeline(tmp_path / "training.yaml")
    assert fresh.read_text() == COMPILED_PIPELINE.read_text(), "run `apd pipeline compile` and commit the result"


def test_committed_batch_pipeline_yaml_is_current(tmp_path: Path) -> None:
    fresh = compile_batch_pipeline(tmp_path / "batch.yaml")
    assert fresh.read_text() == COMPILED_BATCH_PIPELINE.read_text(), "run `apd pipeline compile` and commit the result"


def _train_resources(path: Path) -> dict[str, object]:
    spec = yaml.safe_load(path.read_text())
    return spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]


def test_train_step_resources_are_compile_options(tmp_path: Path) -> None:
    gpu = _train_resources(compile_pipeline(tmp_path / "gpu.yaml"))
    cpu_only = _train_resources(compile_pipeline(tmp_path / "cpu.yaml", TrainResources(gpus=0, memory="8G")))
    assert gpu["accelerator"] == {
        "count": "1",
        "resourceCount": "1",
        "resourceType": "nvidia.com/gpu",
        "type": "nvidia.com/gpu",
    }
    assert "accelerator" not in cpu_only
    assert cpu_only["memoryLimit"] == 8.0


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        (["epochs=3"], {"epochs": 3}),  # Integer
        (["lr=0.0005", "label_map=0=ai_generated,1=real"], {"lr": 0.0005, "label_map": "0=ai_generated,1=real"}),
        ([], {}),  # nothing to override
    ],
)
def test_params_are_typed_by_the_pipeline(pairs: list[str], expected: dict[str, object]) -> None:
    assert parse_params(training_pipeline, pairs) == expected


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["epoch=3"], "expected NAME=VALUE with NAME one of"),  # a typo in the name
        (["epochs"], "expected NAME=VALUE"),  # no value
        (["epochs=three"], "parameter epochs must be Integer, got 'three'"),  # wrong type
    ],
)
def test_bad_params_say_what_is_accepted(pairs: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_params(training_pipeline, pairs)
