"""Distributed training jobs (``components.trainjob``): the TrainJob and PyTorchJob manifests, how torchrun reads what
their controllers set, the choice of kind, and creating, following and waiting for a job against a fake API server
with a training controller behind it (tests/deploy/fake_kube.py; no cluster can run here)."""

import io
import json
import re
import signal
from typing import Any

import pytest

from components.common.errors import TrainingJobError
from components.common.settings import Settings, TrainingJobSettings
from components.stage import COMPONENT_IMAGE
from components.trainjob import (
    PYTORCHJOB,
    TRAINJOB,
    JobKind,
    JobRequest,
    choose_kind,
    container_env,
    new_job_name,
    pytorchjob_manifest,
    run_distributed,
    run_job,
    trainjob_manifest,
    verdict,
)
from tests.deploy.fake_kube import NOTEBOOK_API, PYTORCHJOB_API, TRAINJOB_API, FakeTrainingCluster

COMMAND = ("torchrun", "-m", "components.train_ranks", "--spec", '{"epochs": 3}')
ENV = {"APD_S3__ENDPOINT": "minio.apd:9000", "APD_MLFLOW__TRACKING_URI": "http://mlflow.apd:5000"}
FAST = TrainingJobSettings(poll_seconds=0.01, timeout_seconds=10)
COMPLETE = {"type": "Complete", "status": "True", "reason": "JobSetCompleted", "message": "jobset completed"}
SUCCEEDED = {"type": "Succeeded", "status": "True", "reason": "PyTorchJobSucceeded", "message": "job succeeded"}
FAILED = {"type": "Failed", "status": "True", "reason": "JobSetFailed", "message": "jobset failed: node-0 exited 1"}


def request(nodes: int = 2, procs: int = 2, env: dict[str, str] | None = None) -> JobRequest:
    return JobRequest("apd-train-0a1b2c3d", "kubeflow-user", COMMAND, ENV if env is None else env, nodes, procs)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# ------------------------------------------------------------------------------------------------------ manifests


def test_trainjob_runs_the_command_on_the_torch_runtime() -> None:
    job = trainjob_manifest(request(), TrainingJobSettings())
    assert (job["apiVersion"], job["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert job["metadata"] == {
        "name": "apd-train-0a1b2c3d",
        "namespace": "kubeflow-user",
        "labels": {"app.kubernetes.io/part-of": "apd", "app.kubernetes.io/component": "training"},
    }
    spec = job["spec"]
    assert spec["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
        "name": "torch-distributed",
    }
    assert spec["activeDeadlineSeconds"] == 43200
    trainer = spec["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 2)
    assert (trainer["image"], trainer["command"]) == (COMPONENT_IMAGE, list(COMMAND))
    assert env_of(trainer) == {**ENV, "PYTHONUNBUFFERED": "1"}
    assert trainer["resourcesPerNode"] == {
        "requests": {"cpu": "4", "memory": "16G"},
        "limits": {"cpu": "4", "memory": "16G", "nvidia.com/gpu": 2},  # one GPU per process by default
    }
    assert "runtimePatches" not in spec  # the runtime's pods keep the namespace's default service account


def test_trainjob_sets_the_service_account_through_a_runtime_patch() -> None:
    settings = TrainingJobSettings(service_account="apd-trainer", image="registry.example/apd-components:0.2.0")
    spec = trainjob_manifest(request(), settings)["spec"]
    [patch] = spec["runtimePatches"]
    [node] = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"  # the replicated job of the torch-distributed runtime
    assert node["template"]["spec"]["template"]["spec"] == {"serviceAccountName": "apd-trainer"}
    assert spec["trainer"]["image"] == "registry.example/apd-components:0.2.0"


@pytest.mark.parametrize(("nodes", "roles"), [(2, {"Master": 1, "Worker": 1}), (4, {"Master": 1, "Worker": 3})])
def test_pytorchjob_has_a_master_and_the_other_nodes_as_workers(nodes: int, roles: dict[str, int]) -> None:
    job = pytorchjob_manifest(request(nodes=nodes, procs=2), TrainingJobSettings(gpus=0, service_account="trainer"))
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    assert job["metadata"]["labels"]["app.kubernetes.io/part-of"] == "apd"
    spec = job["spec"]
    assert spec["nprocPerNode"] == "2"
    assert spec["runPolicy"] == {"activeDeadlineSeconds": 43200}
    replicas = spec["pytorchReplicaSpecs"]
    assert {role: r["replicas"] for role, r in replicas.items()} == roles
    for replica in replicas.values():
        assert replica["restartPolicy"] == "Never"  # a failed rank fails the job
        pod = replica["template"]["spec"]
        assert pod["serviceAccountName"] == "trainer"
        [container] = pod["containers"]
        assert container["name"] == "pytorch"  # the container the Training Operator injects PET_* into
        assert (container["image"], container["command"]) == (COMPONENT_IMAGE, list(COMMAND))
        assert env_of(container) == ENV
        assert container["resources"]["limits"] == {"cpu": "4", "memory": "16G"}  # gpus=0: CPU only


def test_pytorchjob_on_one_node_has_no_workers() -> None:
    spec = pytorchjob_manifest(request(nodes=1), TrainingJobSettings())["spec"]
    assert set(spec["pytorchReplicaSpecs"]) == {"Master"}


# The PET_* variables each controller gives node rank 1 of a 2-node, 2-process job (Trainer's Torch plugin; the
# Training Operator's pytorch envvar.go and master.go): torchrun must take its topology from them alone.
CONTROLLER_ENV = {
    "TrainJob": {
        "PET_NNODES": "2",
        "PET_NPROC_PER_NODE": "2",
        "PET_NODE_RANK": "1",
        "PET_MASTER_ADDR": "apd-train-0a1b2c3d-node-0-0.apd-train-0a1b2c3d",
        "PET_MASTER_PORT": "29500",
    },
    "PyTorchJob": {
        "PET_NNODES": "2",
        "PET_NPROC_PER_NODE": "2",
        "PET_NODE_RANK": "1",
        "PET_MASTER_ADDR": "apd-train-0a1b2c3d-master-0",
        "PET_MASTER_PORT": "23456",
    },
}


@pytest.mark.parametrize("kind", [TRAINJOB, PYTORCHJOB], ids=lambda k: k.kind)
def test_torchrun_takes_the_topology_from_the_controllers_pet_variables(
    monkeypatch: pytest.MonkeyPatch, kind: JobKind
) -> None:
    from torch.distributed.run import config_from_args, get_args_parser

    job = (trainjob_manifest if kind is TRAINJOB else pytorchjob_manifest)(request(), TrainingJobSettings())
    trainer = job["spec"]["trainer"] if kind is TRAINJOB else job["spec"]["pytorchReplicaSpecs"]["Worker"]
    command = trainer["command"] if kind is TRAINJOB else trainer["template"]["spec"]["containers"][0]["command"]
    assert command[0] == "torchrun"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # torchrun would set it in this process otherwise
    for name, value in CONTROLLER_ENV[kind.kind].items():
        monkeypatch.setenv(name, value)
    config, _, args = config_from_args(get_args_parser().parse_args(command[1:]))
    master = CONTROLLER_ENV[kind.kind]
    assert (config.min_nodes, config.max_nodes, config.nproc_per_node) == (2, 2, 2)
    assert config.rdzv_backend == "static"
    assert config.rdzv_endpoint == f"{master['PET_MASTER_ADDR']}:{master['PET_MASTER_PORT']}"
    assert config.rdzv_configs["rank"] == 1
    assert args[-4:] == ["-m", "components.train_ranks", "--spec", '{"epochs": 3}']


# ------------------------------------------------------------------------------------------- environment, secrets


def test_s3_credentials_come_from_the_secret_never_in_clear() -> None:
    env = {**ENV, "APD_S3__ACCESS_KEY": "AKIAEXAMPLE", "APD_S3__SECRET_KEY": "wJalrXUtnFEMI-example"}
    settings = TrainingJobSettings(s3_secret="apd-s3")
    for job in (trainjob_manifest(request(env=env), settings), pytorchjob_manifest(request(env=env), settings)):
        text = json.dumps(job)
        assert "AKIAEXAMPLE" not in text
        assert "wJalrXUtnFEMI-example" not in text
    variables = env_of(trainjob_manifest(request(env=env), settings)["spec"]["trainer"])
    for name, key in [
        ("APD_S3__ACCESS_KEY", "AWS_ACCESS_KEY_ID"),
        ("APD_S3__SECRET_KEY", "AWS_SECRET_ACCESS_KEY"),
        ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),  # MLflow's boto3
        ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    ]:
        assert variables[name] == {"secretKeyRef": {"name": "apd-s3", "key": key}}
    assert variables["APD_S3__ENDPOINT"] == "minio.apd:9000"


@pytest.mark.parametrize(
    ("env", "s3_secret", "refused"),
    [
        # S3 credentials with no Secret to take them from
        ({"APD_S3__SECRET_KEY": "x"}, None, "APD_S3__SECRET_KEY"),
        ({"AWS_ACCESS_KEY_ID": "x"}, None, "AWS_ACCESS_KEY_ID"),
        # a secret that the S3 Secret does not hold, with or without it
        ({"MLFLOW_TRACKING_TOKEN": "x"}, "apd-s3", "MLFLOW_TRACKING_TOKEN"),
        ({"MLFLOW_TRACKING_PASSWORD": "x"}, None, "MLFLOW_TRACKING_PASSWORD"),
    ],
)
def test_secrets_are_never_written_in_clear(env: dict[str, str], s3_secret: str | None, refused: str) -> None:
    with pytest.raises(TrainingJobError, match=rf"{refused} would be written .* APD_TRAINJOB__S3_SECRET"):
        container_env(env, s3_secret)


@pytest.mark.parametrize(
    ("nodes", "procs", "command", "env", "complaint"),
    [
        (0, 1, COMMAND, {}, "at least 1 node"),  # no node
        (2, 0, COMMAND, {}, "1 process per node"),  # no process
        (2, 2, ("python", "-m", "components.train_ranks"), {}, "must start with torchrun"),  # not torchrun
        (2, 2, (), {}, "must start with torchrun"),  # nothing to run
        (2, 2, COMMAND, {"PET_NNODES": "4"}, "must not set PET_NNODES"),  # the controller's variable
    ],
)
def test_bad_requests_are_refused(
    nodes: int, procs: int, command: tuple[str, ...], env: dict[str, str], complaint: str
) -> None:
    with pytest.raises(TrainingJobError, match=complaint):
        JobRequest("apd-train-0a1b2c3d", "ns", command, env, nodes, procs)


def test_job_names_are_unique_dns_labels() -> None:
    names = {new_job_name() for _ in range(50)}
    assert len(names) == 50
    for name in names:
        # TrainJob's CEL rule and the Training Operator's DNS-1035 check
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)
        assert len(name) <= 63


def test_settings_read_the_trainjob_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APD_TRAINJOB__KIND", "pytorchjob")
    monkeypatch.setenv("APD_TRAINJOB__GPUS", "0")
    monkeypatch.setenv("APD_TRAINJOB__S3_SECRET", "apd-s3")
    section = Settings().trainjob
    assert (section.kind, section.gpus, section.s3_secret, section.runtime) == (
        "pytorchjob",
        0,
        "apd-s3",
        "torch-distributed",
    )


# ------------------------------------------------------------------------------------------------ choosing a kind


@pytest.mark.parametrize(
    ("served", "setting", "chosen"),
    [
        ((TRAINJOB_API,), "auto", TRAINJOB),  # Kubeflow Trainer
        ((TRAINJOB_API, PYTORCHJOB_API), "auto", TRAINJOB),  # both installed: Trainer first
        ((PYTORCHJOB_API, NOTEBOOK_API), "auto", PYTORCHJOB),  # the older Training Operator
        ((TRAINJOB_API,), "pytorchjob", PYTORCHJOB),  # the setting decides, no discovery
        ((), "trainjob", TRAINJOB),
    ],
)
def test_kind_is_chosen_by_discovery_or_setting(
    served: tuple[tuple[str, str, str, str], ...], setting: str, chosen: JobKind
) -> None:
    assert choose_kind(FakeTrainingCluster(served), setting) is chosen


@pytest.mark.parametrize("served", [(), (NOTEBOOK_API,)])  # nothing; kubeflow.org without pytorchjobs
def test_no_training_controller_says_what_to_install(served: tuple[tuple[str, str, str, str], ...]) -> None:
    with pytest.raises(TrainingJobError, match="install Kubeflow Trainer"):
        choose_kind(FakeTrainingCluster(served), "auto")


@pytest.mark.parametrize(
    ("kind", "condition", "expected"),
    [
        (TRAINJOB, COMPLETE, (True, "JobSetCompleted: jobset completed")),
        (TRAINJOB, FAILED, (False, "JobSetFailed: jobset failed: node-0 exited 1")),
        (TRAINJOB, {**COMPLETE, "status": "False"}, None),  # not (yet) true
        (TRAINJOB, SUCCEEDED, None),  # a PyTorchJob's condition type means nothing on a TrainJob
        (PYTORCHJOB, SUCCEEDED, (True, "PyTorchJobSucceeded: job succeeded")),
        (PYTORCHJOB, {"type": "Running", "status": "True"}, None),
    ],
)
def test_verdict_reads_the_final_condition(
    kind: JobKind, condition: dict[str, str], expected: tuple[bool, str] | None
) -> None:
    assert verdict(kind, {"status": {"conditions": [{"type": "Created", "status": "True"}, condition]}}) == expected
    assert verdict(kind, {}) is None  # no status yet


# -------------------------------------------------------------------------------------- creating and waiting


@pytest.mark.parametrize(
    ("kind", "served", "outcome", "container"),
    [(TRAINJOB, (TRAINJOB_API,), COMPLETE, "node"), (PYTORCHJOB, (PYTORCHJOB_API,), SUCCEEDED, "pytorch")],
    ids=["TrainJob", "PyTorchJob"],
)
def test_a_successful_job_streams_rank_zeros_log_and_is_deleted(
    kind: JobKind, served: tuple[tuple[str, str, str, str], ...], outcome: dict[str, str], container: str
) -> None:
    lines = ("epoch 1 loss=0.61", "epoch 2 loss=0.40", "saved checkpoint")
    cluster = FakeTrainingCluster(served, outcome=outcome, logs=lines)
    out = io.StringIO()
    run_job(kind, request(), FAST, cluster, cluster, out)
    [created] = cluster.created
    assert created["kind"] == kind.kind
    assert out.getvalue().splitlines() == list(lines)  # rank 0 only, whole lines, in order
    [read] = cluster.log_reads
    assert (read["container"], read["follow"]) == (container, True)
    assert cluster.deleted == [
        {
            "plural": kind.plural,
            "namespace": "kubeflow-user",
            "name": "apd-train-0a1b2c3d",
            "kwargs": {"propagation_policy": "Background"},
        }
    ]


def test_a_failed_job_fails_the_step_with_its_condition_and_log_and_is_kept() -> None:
    lines = [f"step {i}" for i in range(100)] + ["RuntimeError: CUDA out of memory"]
    cluster = FakeTrainingCluster(outcome=FAILED, logs=tuple(lines))
    with pytest.raises(TrainingJobError) as failure:
        run_job(TRAINJOB, request(), FAST, cluster, cluster, io.StringIO())
    message = str(failure.value)
    assert "TrainJob kubeflow-user/apd-train-0a1b2c3d failed (JobSetFailed: jobset failed: node-0 exited 1)" in message
    assert message.index("step 99") < message.index("RuntimeError: CUDA out of memory")
    assert "step 60\n" not in message  # only the last lines
    assert "kubectl describe trainjobs apd-train-0a1b2c3d -n kubeflow-user" in message
    assert cluster.deleted == []  # kept for kubectl describe and logs


def test_a_failure_before_rank_zero_ran_says_so() -> None:
    cluster = FakeTrainingCluster(
        (PYTORCHJOB_API,), outcome={**FAILED, "reason": "ImagePullBackOff"}, rank0_phase="Pending"
    )
    with pytest.raises(TrainingJobError, match=r"ImagePullBackOff.*rank 0 wrote no log"):
        run_job(PYTORCHJOB, request(), FAST, cluster, cluster, io.StringIO())
    assert cluster.log_reads == []  # a pending pod has no log to follow


def test_a_job_past_the_timeout_is_deleted() -> None:
    cluster = FakeTrainingCluster(outcome=None, logs=("epoch 1",), rank0_phase="Running")
    settings = TrainingJobSettings(poll_seconds=0.01, timeout_seconds=0.2)
    with pytest.raises(TrainingJobError, match=r"did not finish within 0.2 s .*APD_TRAINJOB__TIMEOUT_SECONDS"):
        run_job(TRAINJOB, request(), settings, cluster, cluster, io.StringIO())
    assert [d["name"] for d in cluster.deleted] == ["apd-train-0a1b2c3d"]
    assert cluster.jobs == {}


def test_forbidden_create_says_which_rbac_is_missing() -> None:
    cluster = FakeTrainingCluster(outcome=COMPLETE, forbidden=("create",))
    with pytest.raises(TrainingJobError, match=r"forbidden to create TrainJob .*trainingJobs\.enabled=true"):
        run_job(TRAINJOB, request(), FAST, cluster, cluster, io.StringIO())
    assert cluster.created == []


def test_a_step_that_stops_waiting_deletes_its_job() -> None:
    cluster = FakeTrainingCluster(outcome=COMPLETE, forbidden=("get",))
    with pytest.raises(TrainingJobError, match="forbidden to read"):
        run_job(TRAINJOB, request(), FAST, cluster, cluster, io.StringIO())
    assert [d["name"] for d in cluster.deleted] == ["apd-train-0a1b2c3d"]


def test_run_distributed_creates_the_job_in_the_steps_namespace(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = FakeTrainingCluster((PYTORCHJOB_API,), outcome=SUCCEEDED, logs=("done",))
    monkeypatch.setattr("components.trainjob.kube_api", lambda: (cluster, "kubeflow-user"))
    monkeypatch.setattr("kubernetes.client.CoreV1Api", lambda: cluster)
    run_distributed(list(COMMAND), ENV, 3, 1, settings=TrainingJobSettings(poll_seconds=0.01))
    [job] = cluster.created
    assert job["metadata"]["namespace"] == "kubeflow-user"
    assert re.fullmatch(r"apd-train-[0-9a-f]{8}", job["metadata"]["name"])
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2
    assert "done" in capsys.readouterr().out.splitlines()  # rank 0's log on the step's stdout
    assert len(cluster.deleted) == 1


def test_a_cancelled_step_deletes_its_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """KFP stops a cancelled run's step with SIGTERM: the step exits through its clean-up, which deletes the job."""

    class NotHandledError(Exception):
        """Raised by this test's own handler: run_distributed did not install one."""

    def unhandled(signum: int, frame: object) -> None:
        raise NotHandledError

    cluster = FakeTrainingCluster(outcome=None, logs=("epoch 1",), rank0_phase="Running")
    monkeypatch.setattr("components.trainjob.kube_api", lambda: (cluster, "kubeflow-user"))
    monkeypatch.setattr("kubernetes.client.CoreV1Api", lambda: cluster)
    # The signal arrives while the step polls the job: the handler installed then runs, as Python runs a handler,
    # in the main thread. (A real SIGTERM sent to the test process killed it under pytest-cov's SIGTERM handling.)
    polls = [0]
    read_status = cluster.get_namespaced_custom_object

    def status_then_sigterm(*args: Any, **kwargs: Any) -> Any:
        polls[0] += 1
        if polls[0] == 3:
            signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)  # type: ignore[operator]
        return read_status(*args, **kwargs)

    monkeypatch.setattr(cluster, "get_namespaced_custom_object", status_then_sigterm)
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        with pytest.raises(SystemExit) as stopped:
            run_distributed(list(COMMAND), ENV, 2, 1, settings=TrainingJobSettings(poll_seconds=0.01))
        assert stopped.value.code == 128 + signal.SIGTERM
        assert len(cluster.deleted) == 1
        assert signal.getsignal(signal.SIGTERM) is unhandled  # the step's own handler is back
    finally:
        signal.signal(signal.SIGTERM, previous)
