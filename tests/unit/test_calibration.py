"""Calibration: temperature scaling, expected calibration error, the changed-decision bound, and the temperature's
round trip through the model artifact into every runtime."""

from pathlib import Path

import numpy as np
import pytest
import torch

from components.common.artifact import ArtifactConfig, export_onnx, load_artifact, write_artifact
from components.common.calibration import expected_calibration_error, fit_temperature, rate_upper_bound
from components.common.model import build_model, save_checkpoint
from components.common.model_config import ModelConfig
from components.common.runtimes import image_logits, open_engine
from components.common.transforms import Preprocessing


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 3.0])
def test_temperature_scaling_recovers_the_temperature_that_made_the_labels(true_temperature: float) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, 20000)
    labels = (rng.random(20000) < 1 / (1 + np.exp(-logits / true_temperature))).astype(float)
    assert fit_temperature(logits, labels) == pytest.approx(true_temperature, rel=0.08)


def test_an_overconfident_model_is_cooled_and_its_calibration_error_falls() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, 5000)
    labels = (rng.random(5000) < 1 / (1 + np.exp(-logits))).astype(float)
    overconfident = logits * 4  # what a model trained to zero loss on a small set looks like
    temperature = fit_temperature(overconfident, labels)
    before = expected_calibration_error(1 / (1 + np.exp(-overconfident)), labels)
    after = expected_calibration_error(1 / (1 + np.exp(-overconfident / temperature)), labels)
    assert temperature == pytest.approx(4, rel=0.15)
    assert before > 0.1
    assert after < 0.03


@pytest.mark.parametrize(
    ("probs", "labels", "expected"),
    [
        ([0.9, 0.9, 0.1, 0.1], [1, 1, 0, 0], 0.1),  # confident and right: 0.1 off in each bin
        ([0.5, 0.5], [1, 0], 0.0),  # 50 % said, 50 % true
        ([1.0, 0.0], [0, 1], 1.0),  # certain and always wrong
    ],
)
def test_expected_calibration_error(probs: list[float], labels: list[int], expected: float) -> None:
    assert expected_calibration_error(np.array(probs), np.array(labels)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("events", "trials", "expected"),
    [(0, 400, 0.00746), (2, 400, 0.01566), (5, 100, 0.10225), (10, 10, 1.0), (0, 0, 1.0)],
)
def test_clopper_pearson_upper_bound(events: int, trials: int, expected: float) -> None:
    assert rate_upper_bound(events, trials) == pytest.approx(expected, abs=2e-5)


def test_the_temperature_travels_in_the_artifact_and_every_runtime_applies_it(tmp_path: Path) -> None:
    config = ModelConfig(preprocessing=Preprocessing(image_size=32, max_crops=4))
    torch.manual_seed(0)
    model = build_model(config).eval()
    save_checkpoint(model, tmp_path / "model.pt")
    write_artifact(tmp_path / "v1", tmp_path / "model.pt", ArtifactConfig(config, 0.5, "test", temperature=2.5), {})
    export_onnx(model, tmp_path / "v1" / "model.onnx")
    net, loaded = load_artifact(tmp_path / "v1")
    assert loaded.temperature == 2.5
    crops = [np.random.default_rng(2).normal(size=(n, 3, 32, 32)).astype(np.float32) for n in (1, 4, 3)]
    with torch.inference_mode():
        mean_logits = np.array([float(net(torch.from_numpy(c)).mean()) for c in crops])
    expected = 1 / (1 + np.exp(-mean_logits / 2.5))
    for runtime in ("torch", "onnxruntime", "openvino"):
        probs = loaded.probabilities(image_logits(open_engine(tmp_path / "v1", runtime, "fp32", 2, net), crops))
        assert probs == pytest.approx(expected, abs=1e-4), runtime
