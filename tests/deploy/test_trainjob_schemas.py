"""Distributed training on a cluster, offline: the TrainJob and PyTorchJob the train step creates pass the CRD schemas
of Kubeflow Trainer v2.3.0 and the Training Operator v1.9.4 (tests/deploy/schemas.py), and the chart's Role lets the
pipeline's service account do exactly what ``components.trainjob`` does."""

import copy
import dataclasses
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml

from components import trainjob
from components.common.model import build_model, save_checkpoint
from components.common.model_config import CHECKPOINT_FILE
from components.common.settings import MlflowSettings, Settings, TrainingJobSettings
from components.common.tracking import new_run, setup_tracking
from components.stage import COMPONENT_IMAGE
from components.train import TrainConfig
from components.train_ranks import RankSpec, run_training
from components.trainjob import JobRequest, pytorchjob_manifest, trainjob_manifest
from tests.deploy.conftest import CHART, NAMESPACE, REPO, Helm
from tests.deploy.schemas import InvalidResourceError, validate_resource, validate_resources

REQUEST = JobRequest(
    name="apd-train-0a1b2c3d",
    namespace="kubeflow-user",
    command=("torchrun", "-m", "components.train_ranks", "--spec", '{"epochs": 3}'),
    env={"APD_S3__ENDPOINT": "minio.apd:9000", "APD_MLFLOW__TRACKING_URI": "http://mlflow.apd:5000"},
    nodes=2,
    procs_per_node=2,
)
# Every optional part of the manifests on: a service account (TrainJob: a runtime patch) and S3 credentials taken
# from the S3 Secret.
SETTINGS = TrainingJobSettings(service_account="apd-trainer", s3_secret="apd-s3", gpus=0)
WITH_KEYS = dataclasses.replace(REQUEST, env={**REQUEST.env, "APD_S3__ACCESS_KEY": "x", "APD_S3__SECRET_KEY": "y"})
BUILDERS = {"TrainJob": trainjob_manifest, "PyTorchJob": pytorchjob_manifest}
JOB_VERBS = {"create", "get", "list", "watch", "delete"}


@pytest.mark.parametrize(
    ("request_", "settings"), [(REQUEST, TrainingJobSettings()), (WITH_KEYS, SETTINGS)], ids=["defaults", "all-options"]
)
@pytest.mark.parametrize("kind", BUILDERS)
def test_jobs_pass_their_crd_schema(kind: str, request_: JobRequest, settings: TrainingJobSettings) -> None:
    validate_resource(BUILDERS[kind](request_, settings))


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("TrainJob", ("spec", "trainer", "numProcPerNode"), "2"),  # an integer in v2.3.0, "auto" is gone
        ("TrainJob", ("spec", "trainer", "numNodes"), "2"),
        ("TrainJob", ("spec", "trainer", "nprocPerNode"), 2),  # the PyTorchJob's field has no place here
        ("PyTorchJob", ("spec", "nprocPerNode"), 2),  # a string in the Training Operator
        ("PyTorchJob", ("spec", "pytorchReplicaSpecs", "Master", "replica"), 1),  # a misspelled field
    ],
)
def test_the_schemas_catch_a_wrong_field(kind: str, path: tuple[str, ...], value: Any) -> None:
    """The check above can fail: the same job with one field of the wrong type or name is refused."""
    job = copy.deepcopy(BUILDERS[kind](WITH_KEYS, SETTINGS))
    node = job
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(InvalidResourceError, match=path[-1]):
        validate_resource(job)


def _grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def _training_rbac(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in resources if r["metadata"]["name"] == "apd-training"]


def test_chart_role_grants_exactly_what_the_train_step_does(helm: Helm) -> None:
    resources = helm.template(set_values=["trainingJobs.enabled=true", "rbac.pipelineNamespace=kubeflow-user"])
    rbac = _training_rbac(resources)
    validate_resources(rbac)
    role, binding = (next(r for r in rbac if r["kind"] == kind) for kind in ("Role", "RoleBinding"))
    assert _grants(role) == {
        ("trainer.kubeflow.org", "trainjobs"): JOB_VERBS,
        ("kubeflow.org", "pytorchjobs"): JOB_VERBS,
        ("", "pods"): {"get", "list"},  # rank 0's pod is found by its labels
        ("", "pods/log"): {"get"},
    }
    # Where the step runs and creates its jobs: the pipeline's namespace.
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "kubeflow-user"
    assert role["metadata"]["labels"]["app.kubernetes.io/part-of"] == "apd"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "apd-training"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow-user"}]


def test_chart_binds_the_configured_service_account_in_the_release_namespace(helm: Helm) -> None:
    resources = helm.template(set_values=["trainingJobs.enabled=true", "rbac.pipelineServiceAccount=default-editor"])
    [binding] = [r for r in _training_rbac(resources) if r["kind"] == "RoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "default-editor", "namespace": NAMESPACE}]


@pytest.mark.parametrize(
    "assignments",
    [
        [],  # off by default
        ["trainingJobs.enabled=true", "rbac.create=false"],  # no RBAC at all
    ],
)
def test_chart_renders_no_training_rbac_unless_asked(helm: Helm, assignments: list[str]) -> None:
    assert _training_rbac(helm.template(set_values=assignments)) == []


def test_values_schema_checks_the_switch(helm: Helm) -> None:
    for assignment in ["trainingJobs.enabled=maybe", "trainingJobs.namespace=other"]:
        result = helm.run(*helm.template_args(set_values=[assignment], chart=CHART), check=False)
        assert result.returncode != 0, assignment
        assert "trainingJobs" in result.stderr


def test_the_compiled_pipeline_with_train_nodes_2_creates_a_valid_training_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The committed pipeline takes ``train_nodes`` as a run parameter and hands it to the train step, whose code
    (the function the YAML embeds) gives ``run_distributed``, for train_nodes=2, a torchrun command whose TrainJob
    passes Trainer v2.3.0's schema and whose PyTorchJob passes the Training Operator's. The cluster is replaced by
    a fake launcher that records the job and logs the checkpoint to the MLflow run as rank 0 would."""
    compiled = yaml.safe_load((REPO / "pipelines" / "training.yaml").read_text())
    assert compiled["root"]["inputDefinitions"]["parameters"]["train_nodes"]["defaultValue"] == 1
    task = compiled["root"]["dag"]["tasks"]["train"]
    assert task["inputs"]["parameters"]["train_nodes"] == {"componentInputParameter": "train_nodes"}
    executor = compiled["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert executor["image"] == COMPONENT_IMAGE
    assert "run_training(RankSpec(" in "".join(executor["command"])

    launched: dict[str, Any] = {}

    def fake_run_distributed(
        command: list[str], env: dict[str, str], nodes: int, procs_per_node: int, **_: Any
    ) -> None:
        launched.update(command=command, env=env, nodes=nodes, procs=procs_per_node)
        spec = RankSpec.from_json(command[command.index("--spec") + 1])
        checkpoint = tmp_path / "rank0" / CHECKPOINT_FILE
        checkpoint.parent.mkdir()
        save_checkpoint(build_model(spec.config.model_config()), checkpoint)
        with mlflow.start_run(run_id=spec.run_id):
            mlflow.log_artifact(str(checkpoint), artifact_path="checkpoint")

    monkeypatch.setattr(trainjob, "run_distributed", fake_run_distributed)
    tracking = MlflowSettings(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "mlruns"))
    run_id = new_run(setup_tracking(tracking))
    cfg = TrainConfig(train_nodes=2, train_procs=2, batch_size=8, image_size=32)
    uri = "minio://mlpipeline/v2/artifacts/apd-training/0/ingest/dataset"  # where KFP stores the step's input
    run_training(RankSpec(cfg, uri, str(tmp_path / "model"), run_id, "v1"), Settings(mlflow=tracking))

    assert (tmp_path / "model" / CHECKPOINT_FILE).exists()  # fetched from the run rank 0 logged it to
    command = launched["command"]
    assert command[:3] == ["torchrun", "--nnodes=2", "--nproc-per-node=2"]
    assert RankSpec.from_json(command[command.index("--spec") + 1]).dataset == uri
    assert (launched["nodes"], launched["procs"]) == (2, 2)
    job = JobRequest("apd-train-0a1b2c3d", "kubeflow-user", tuple(command), launched["env"], 2, 2)
    for build in BUILDERS.values():
        validate_resource(build(job, TrainingJobSettings()))
