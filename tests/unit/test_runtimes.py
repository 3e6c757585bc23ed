"""The inference runtimes (``components.common.runtimes``): one small real detector, exported to ONNX, run by torch,
ONNX Runtime and OpenVINO; which variants exist and what opening one that cannot run says. (Which variants a model
version enables is its artifact's config, ``test_artifact.py``; int8 files are made by the evaluate step and judged by
its faithfulness rule, ``test_training_logic.py``, end to end in the training pipeline's integration test.)"""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from components.common import runtimes
from components.common.artifact import load_artifact
from components.common.model import Detector
from components.common.model_config import ModelConfig
from components.common.runtimes import Engine, image_outputs, open_engine
from components.common.transforms import Preprocessing, probabilities
from tests.helpers.artifacts import detector, package_artifact

PREP = Preprocessing(image_size=32, max_crops=4)
RECIPES = ("flux", "sd15", "sdxl")
FP32_RUNTIMES = ("torch", "onnxruntime", "openvino")


@pytest.fixture(scope="module", params=[(), RECIPES], ids=["binary", "attribution"])
def artifact(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Detector]:
    """An artifact folder with model.onnx, and its model as loaded from the folder: without and with an
    attribution head (whose untrained weights are spread out, so that the generator probabilities differ)."""
    model = detector(ModelConfig(preprocessing=PREP, generators=request.param))
    with torch.no_grad():
        if model.attribution is not None:
            model.attribution.weight.mul_(20)
    folder = tmp_path_factory.mktemp("artifact") / "v1"
    package_artifact(model, folder)
    net, config = load_artifact(folder)
    assert config.model.generators == request.param
    return folder, net


def _crops(*counts: int) -> list[np.ndarray]:
    """Each image's crops, (n, 3, 32, 32) float32."""
    rng = np.random.default_rng(2)
    return [rng.normal(size=(n, 3, 32, 32)).astype(np.float32) for n in counts]


def _torch_reference(net: Detector, crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per image, straight from torch: the mean crop logit and the mean of the crops' generator softmax."""
    with torch.inference_mode():
        outputs = [net.forward_all(torch.from_numpy(c)) for c in crops]
    logits = np.array([float(binary.mean()) for binary, _ in outputs])
    generators = np.stack([torch.softmax(g, 1).mean(0).numpy() for _, g in outputs])
    return logits, generators


def test_the_variants() -> None:
    assert runtimes.variant_name("openvino", "bf16") == "openvino/bf16"
    assert [runtimes.variant_name(*v.split("/")) for v in runtimes.VARIANTS] == list(runtimes.VARIANTS)
    assert set(runtimes.EXACT_VARIANTS) == {v for v in runtimes.VARIANTS if v.endswith("/fp32")}
    assert {v.split("/")[0] for v in runtimes.VARIANTS} == set(FP32_RUNTIMES)


def test_every_fp32_runtime_computes_what_torch_computes(artifact: tuple[Path, Detector]) -> None:
    folder, net = artifact
    crops = _crops(1, 4, 3)
    expected_logits, expected_generators = _torch_reference(net, crops)
    generators = len(net.config.generators)
    assert expected_generators.shape == (3, generators)
    for runtime in FP32_RUNTIMES:
        engine = open_engine(folder, runtime, "fp32", 2, net)
        binary, per_crop = engine.outputs(crops[1])
        assert (binary.shape, binary.dtype, per_crop.shape, per_crop.dtype) == ((4,), np.float32, (4, generators),
                                                                                 np.float32), runtime  # fmt: skip
        assert np.array_equal(engine(crops[1]), binary), runtime  # called: the binary logits of the same run
        assert runtimes.image_logits(engine, crops) == pytest.approx(expected_logits, abs=1e-4), runtime
        recipes = runtimes.image_generators(engine, crops)
        assert recipes.shape == expected_generators.shape, runtime
        assert np.abs(recipes - expected_generators).max(initial=0.0) < 1e-4, runtime
        if generators:
            assert recipes.sum(1) == pytest.approx(1.0, abs=1e-5)


def test_many_crops_run_in_bounded_calls_and_each_image_keeps_its_own(artifact: tuple[Path, Detector]) -> None:
    folder, _ = artifact
    engine = open_engine(folder, "onnxruntime", "fp32", 2)
    calls: list[int] = []

    def counted(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(batch))
        return engine.run(batch)

    crops = _crops(50, 1, 29)  # 80 crops: more than one call takes
    logits, generators = image_outputs(Engine(counted), crops)
    assert calls == [runtimes.MAX_CROPS_PER_CALL, 80 - runtimes.MAX_CROPS_PER_CALL]
    alone = [image_outputs(engine, [c]) for c in crops]  # each image on its own
    assert logits == pytest.approx([float(a[0][0]) for a in alone], abs=1e-5)
    assert np.abs(generators - np.concatenate([a[1] for a in alone])).max(initial=0.0) < 1e-5


def test_bf16_runs_on_openvino_only(artifact: tuple[Path, Detector]) -> None:
    folder, _ = artifact
    crops = _crops(2, 3)
    fp32 = runtimes.image_logits(open_engine(folder, "openvino", "fp32", 2), crops)
    bf16 = runtimes.image_logits(open_engine(folder, "openvino", "bf16", 2), crops)
    assert np.abs(probabilities(bf16, 1.0) - probabilities(fp32, 1.0)).max() < 0.05  # bf16: ~3 significant digits
    for runtime in ("onnxruntime", "torch"):
        with pytest.raises(ValueError, match=f"no inference variant {runtime}/bf16; the variants are torch/fp32, "):
            open_engine(folder, runtime, "bf16", 2)


def test_a_variant_that_cannot_run_says_why(artifact: tuple[Path, Detector], tmp_path: Path) -> None:
    folder, _ = artifact
    for runtime in ("onnxruntime", "openvino"):  # no quantized file in this artifact
        with pytest.raises(FileNotFoundError, match=f"{runtime}/int8 needs model.int8.onnx, which the model"):
            open_engine(folder, runtime, "int8", 2)
    with pytest.raises(ValueError, match="no inference variant torch/int8"):
        open_engine(folder, "torch", "int8", 2)
    with pytest.raises(ValueError, match="the torch runtime needs the loaded model"):
        open_engine(folder, "torch", "fp32", 2)
    without_onnx = shutil.copytree(folder, tmp_path / "v1")
    (without_onnx / runtimes.ONNX_FILE).unlink()
    missing = f"openvino/fp32 needs model.onnx, which the model artifact in {without_onnx} does not have"
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        open_engine(without_onnx, "openvino", "fp32", 2)
