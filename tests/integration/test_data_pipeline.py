"""ingest -> validate as KFP components under kfp.local, and ingest from a real S3 server (moto) on loopback."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kfp import dsl
from kfp.dsl import Markdown

from components.common.dataset import read_manifest
from components.common.settings import S3Settings, Settings
from components.ingest import ingest, ingest_dataset
from components.validate import validate
from pipelines.local import run_local
from pipelines.training import training_pipeline
from tests.conftest import MakeTree
from tests.helpers.servers import upload_folder

pytestmark = pytest.mark.integration


@pytest.fixture
def isolated_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Steps run as subprocesses that read APD_* settings; keep their ingest cache inside the test's folder."""
    monkeypatch.setenv("APD_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


@dsl.pipeline(name="apd-data")
def data_pipeline(source: str) -> Markdown:
    """The two data stages of the training pipeline, as the real components."""
    ingested = ingest(source=source)
    return validate(dataset=ingested.outputs["dataset"]).outputs["summary"]


def test_ingest_and_validate_components_under_kfp_local(
    make_tree: MakeTree, tmp_path: Path, isolated_data_dir: Path
) -> None:
    src = make_tree({"train/real": 14, "train/fake": 14, "val/real": 6, "val/fake": 6, "test/real": 6, "test/fake": 6})
    task = run_local(data_pipeline, tmp_path / "runs", source=str(src))
    summary = Path(task.output.path)
    run_dir = summary.parent.parent
    dataset_dir = run_dir / "ingest" / "dataset"
    version = json.loads((dataset_dir / "dataset.json").read_text())["dataset_version"]
    report = json.loads((run_dir / "validate" / "report").read_text())
    assert len(read_manifest(dataset_dir)) == 52
    assert report["passed"] is True
    assert report["dataset_version"] == version
    assert f"Dataset version `{version}`" in summary.read_text()
    assert "# Dataset validation: PASSED" in summary.read_text()
    assert (isolated_data_dir / "cache" / "index.json").exists()


def test_training_pipeline_stops_at_validate_with_the_reason(
    make_tree: MakeTree, tmp_path: Path, isolated_data_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    src = make_tree({"real": 40, "ai_generated": 4})  # 10:1, far over the class-ratio limit
    with pytest.raises(RuntimeError, match=r"Inner task failed: .*validate"):
        run_local(training_pipeline, tmp_path / "runs", source=str(src), min_images_per_split=1)
    logs = capfd.readouterr()
    assert "DataValidationError" in logs.out + logs.err
    assert (
        "[class_balance] overall: 40 real vs 4 ai_generated, ratio 10.00 exceeds the limit 1.5" in logs.out + logs.err
    )
    [report] = (tmp_path / "runs").glob("*/validate/report")
    assert json.loads(report.read_text())["passed"] is False


def test_ingest_from_s3_matches_the_folder_and_reuses_the_cache(
    make_tree: MakeTree, tmp_path: Path, s3_server: S3Settings
) -> None:
    src = make_tree({"real": 12, "ai_generated": 12, "notes": 1})
    upload_folder(s3_server, src, "photos", "batch-1")
    settings = Settings(data_dir=tmp_path / "data", s3=s3_server)
    cache = tmp_path / "data" / "cache"
    from_s3 = ingest_dataset("s3://photos/batch-1", tmp_path / "a", cache, settings.splits, s3_server)
    again = ingest_dataset("s3://photos/batch-1/", tmp_path / "b", cache, settings.splits, s3_server)
    from_folder = ingest_dataset(str(src), tmp_path / "c", tmp_path / "cache2", settings.splits, s3_server)
    assert from_s3.summary.num_images == 24  # notes/ is outside the layout and skipped
    assert from_s3.bytes_read > 0
    assert again.bytes_read == 0
    assert from_s3.summary.dataset_version == again.summary.dataset_version == from_folder.summary.dataset_version
    assert read_manifest(tmp_path / "a")["source"].str.startswith("s3://photos/batch-1/").all()


def test_apd_ingest_command_reads_s3_settings_from_the_environment(
    make_tree: MakeTree, tmp_path: Path, s3_server: S3Settings
) -> None:
    upload_folder(s3_server, make_tree({"REAL": 5, "FAKE": 5}), "cifake", "v1")
    env = {
        "PATH": str(Path(sys.executable).parent),
        "APD_DATA_DIR": str(tmp_path / "data"),
        "APD_S3__ENDPOINT": s3_server.endpoint,
        "APD_S3__ACCESS_KEY": str(s3_server.access_key),
        "APD_S3__SECRET_KEY": str(s3_server.secret_key),
    }
    done = subprocess.run(
        [sys.executable, "-m", "components.cli", "ingest", "s3://cifake/v1", "--out", str(tmp_path / "ds")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "10 images" in done.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "components.cli", "ingest", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
