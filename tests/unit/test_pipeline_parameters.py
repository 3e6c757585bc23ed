"""One source for every run parameter: the stages' parameters, the pipeline's and the configs they come from agree
on names, types and defaults, so `apd pipeline run` and a run from the Kubeflow UI train and gate alike."""

import dataclasses
import typing

import pytest

from components.common.settings import QualityGate, Settings, ValidationRules
from components.evaluate import evaluate
from components.train import TrainConfig, train
from components.validate import validate
from pipelines.training import training_pipeline

KFP_TYPES = {int: "Integer", float: "Float", str: "String", bool: "Boolean"}
TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
TRAIN_HINTS = typing.get_type_hints(TrainConfig)


def _parameters(component: typing.Any) -> dict[str, tuple[str, object]]:
    """Parameter name -> (KFP type, default) of a component or pipeline (artifacts left out)."""
    return {
        name: (spec.type, spec.default)
        for name, spec in component.component_spec.inputs.items()
        if spec.type in KFP_TYPES.values()
    }


def _config_defaults() -> dict[str, tuple[str, object]]:
    """What each stage parameter should be, from the config that owns it."""
    train_params = {
        name: (KFP_TYPES[TRAIN_HINTS[name]], field.default)
        for name, field in TRAIN_FIELDS.items()
        if name != "augmentation"
    }
    train_params["augment"] = ("Boolean", True)  # augment=false runs with Augmentation.off()
    rules = {n: (KFP_TYPES[f.annotation], f.default) for n, f in ValidationRules.model_fields.items()}
    gate = {n: (KFP_TYPES[f.annotation], f.default) for n, f in QualityGate.model_fields.items()}
    return train_params | rules | gate


@pytest.mark.parametrize("component", [train, validate, evaluate], ids=["train", "validate", "evaluate"])
def test_each_stage_takes_its_configs_names_types_and_defaults(component: typing.Any) -> None:
    expected = _config_defaults()
    parameters = {k: v for k, v in _parameters(component).items() if k != "run_id"}
    assert parameters, "no parameters read"
    for name, (kind, default) in parameters.items():
        assert name in expected, f"{name}: a stage parameter no config declares"
        assert (kind, default) == expected[name], name


def test_the_pipeline_passes_every_stage_parameter_with_the_same_type_and_default() -> None:
    pipeline = _parameters(training_pipeline)
    for component in (train, validate, evaluate):
        for name, spec in _parameters(component).items():
            if name == "run_id":  # an upstream output, not a run parameter
                continue
            assert pipeline.get(name) == spec, name


def test_every_config_field_is_a_run_parameter() -> None:
    pipeline = _parameters(training_pipeline)
    missing = sorted(set(_config_defaults()) - set(pipeline))
    assert not missing, f"config fields the pipeline does not expose: {missing}"


def test_the_settings_seed_is_the_training_seed() -> None:
    assert Settings.model_fields["seed"].default == TrainConfig().seed
