"""The model artifact (``components.common.artifact``): one folder, written and loaded the same way from disk and
from the registry; its config turns logits into calibrated probabilities, labels and confidence; artifacts from
before later fields load as they were served."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from components.common.artifact import (
    CONFIG_FILE,
    LABELS,
    METRICS_FILE,
    WEIGHTS_FILE,
    ArtifactConfig,
    fetch_artifact,
    load_artifact,
    write_artifact,
)
from components.common.model import save_checkpoint
from components.common.model_config import ModelConfig
from components.common.runtimes import EXACT_VARIANTS
from components.common.transforms import Preprocessing
from tests.helpers.artifacts import SMALL, detector, local_mlflow, package_artifact, register_artifact

CONFIG = ArtifactConfig(SMALL, threshold=0.4, dataset_version="d1", variants=("torch/fp32", "openvino/bf16"),
                        temperature=2.0)  # fmt: skip


def test_write_then_load_gives_back_the_model_and_its_config(tmp_path: Path) -> None:
    model = detector(seed=3)
    save_checkpoint(model, tmp_path / "model.pt")
    write_artifact(tmp_path / "v1", tmp_path / "model.pt", CONFIG, {"test_accuracy": 0.875})
    assert {p.name for p in (tmp_path / "v1").iterdir()} == {WEIGHTS_FILE, CONFIG_FILE, METRICS_FILE}
    loaded, config = load_artifact(tmp_path / "v1")
    assert config == CONFIG
    assert not loaded.training  # eval mode
    images = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(loaded(images), model(images))
    assert json.loads((tmp_path / "v1" / METRICS_FILE).read_text()) == {"test_accuracy": 0.875}
    assert ArtifactConfig.from_dict(CONFIG.to_dict()) == CONFIG


def test_a_config_that_disagrees_with_the_weights_or_misses_a_field_is_refused(tmp_path: Path) -> None:
    package_artifact(detector(), tmp_path / "v1", onnx=False)
    config = json.loads((tmp_path / "v1" / CONFIG_FILE).read_text())
    config["model"]["hidden_size"] += 1
    (tmp_path / "v1" / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"model\.pt and config\.json disagree on the model config"):
        load_artifact(tmp_path / "v1")
    for field in ("model", "threshold", "dataset_version", "confidence_bands", "labels"):
        partial = {k: v for k, v in CONFIG.to_dict().items() if k != field}
        with pytest.raises(ValueError, match=rf"model artifact config is missing \['{field}'\]"):
            ArtifactConfig.from_dict(partial)


def test_an_artifact_from_before_native_crops_variants_and_calibration_loads_as_it_was_served(tmp_path: Path) -> None:
    """Its preprocessing has no mode (resize and centre crop, one crop), its config no variants (fp32 only) and no
    temperature (uncalibrated)."""
    model = detector(ModelConfig(preprocessing=Preprocessing(image_size=64, mode="resize", max_crops=1)))
    legacy_prep = {k: v for k, v in model.config.preprocessing.to_dict().items()
                   if k not in {"mode", "max_crops", "crop_align"}}  # fmt: skip
    legacy_model = {**model.config.to_dict(), "preprocessing": legacy_prep}
    payload = {"format": 1, "model_config": legacy_model, "state_dict": model.state_dict(), "extra": {}}
    torch.save(payload, tmp_path / "model.pt")
    write_artifact(tmp_path / "old", tmp_path / "model.pt", ArtifactConfig(model.config, 0.5, "old"), {})
    config = json.loads((tmp_path / "old" / CONFIG_FILE).read_text())
    config["model"] = legacy_model
    del config["variants"], config["temperature"]
    (tmp_path / "old" / CONFIG_FILE).write_text(json.dumps(config))
    loaded, artifact = load_artifact(tmp_path / "old")
    prep = artifact.model.preprocessing
    assert (prep.mode, prep.max_crops) == ("resize", 1)
    assert loaded.config.preprocessing == prep
    assert artifact.variants == EXACT_VARIANTS
    assert artifact.temperature == 1.0


def test_fetch_reads_a_folder_in_place(tmp_path: Path) -> None:
    folder = tmp_path / "mnt" / "models"  # where KServe's storage initializer leaves it
    package_artifact(detector(), folder, onnx=False)
    assert fetch_artifact(str(folder), tmp_path / "unused") == folder
    assert not (tmp_path / "unused").exists()  # nothing copied


def test_fetch_downloads_a_registered_version(tmp_path: Path) -> None:
    package_artifact(detector(seed=4), tmp_path / "pkg", threshold=0.3, onnx=False)
    with local_mlflow(tmp_path / "mlflow") as tracking:
        register_artifact(tracking, tmp_path / "pkg", "apd-test")
        register_artifact(tracking, tmp_path / "pkg", "apd-test", alias="challenger")
        by_alias = fetch_artifact("models:/apd-test@champion", tmp_path / "a")
        by_number = fetch_artifact("models:/apd-test/2", tmp_path / "b")
    assert by_alias.is_relative_to(tmp_path / "a")
    assert by_number.is_relative_to(tmp_path / "b")
    for folder in (by_alias, by_number):
        _, config = load_artifact(folder)
        assert config.threshold == 0.3
    shutil.rmtree(tmp_path / "pkg")  # the downloads stand on their own
    assert load_artifact(by_alias)[1].dataset_version == "test"


@pytest.mark.parametrize(
    ("logit", "temperature", "expected"),
    [(0.0, 2.0, 0.5), (2.0, 1.0, 0.8807971), (2.0, 2.0, 0.7310586), (-3.0, 3.0, 0.2689414)],
)
def test_probabilities_divide_the_logit_by_the_temperature(logit: float, temperature: float, expected: float) -> None:
    config = ArtifactConfig(SMALL, 0.5, "d", temperature=temperature)
    assert config.probabilities(np.array([logit, logit])) == pytest.approx([expected] * 2, rel=1e-6)


@pytest.mark.parametrize(
    ("probability", "label", "margin", "confidence"),
    [
        (0.4, "ai_generated", 0.0, "low"),  # at the threshold: ai_generated
        (0.39, "real", 0.025, "low"),
        (0.7, "ai_generated", 0.5, "medium"),  # 0.3 of the 0.6 room above
        (0.94, "ai_generated", 0.9, "high"),
        (0.2, "real", 0.5, "medium"),  # 0.2 of the 0.4 room below
        (0.0, "real", 1.0, "high"),
        (1.0, "ai_generated", 1.0, "high"),
    ],
)
def test_label_margin_and_confidence_from_the_threshold(
    probability: float, label: str, margin: float, confidence: str
) -> None:
    assert (CONFIG.label(probability), CONFIG.confidence(probability)) == (label, confidence)
    assert CONFIG.margin(probability) == pytest.approx(margin)
    assert LABELS == ("real", "ai_generated")


def test_a_threshold_of_one_leaves_no_room_above_and_counts_as_certain() -> None:
    config = ArtifactConfig(SMALL, 1.0, "d")
    assert (config.label(1.0), config.margin(1.0), config.confidence(1.0)) == ("ai_generated", 1.0, "high")
