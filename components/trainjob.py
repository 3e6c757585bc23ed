"""Distributed training on a cluster: the train step's ``torchrun`` command run on several pods as a Kubeflow
TrainJob (Kubeflow Trainer v2, the ``torch-distributed`` ClusterTrainingRuntime) or, where the cluster has the older
Training Operator instead, a PyTorchJob. The step waits for the job, prints rank 0's log as its own, and fails with it.

Both controllers give every node's pod the ``PET_*`` variables that torchrun takes its defaults from: ``PET_NNODES``,
``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and ``PET_MASTER_PORT`` (static rendezvous on the first
node's pod). The same ``torchrun -m components.train_ranks ...`` therefore runs under either without rendezvous flags.

A job is named ``apd-train-<8 hex digits>`` and labelled ``app.kubernetes.io/part-of: apd``. The step deletes it
(pods go with it) once it succeeded, ran out of time, or the step itself stopped; a failed job is kept, with its pods,
for ``kubectl describe`` and ``kubectl logs``; the error message says how to delete it.
"""

import math
import re
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TextIO, cast

import structlog

from components.common.errors import DeployError, TrainingJobError
from components.common.settings import Settings, TrainingJobSettings
from components.rollout.kube import api_message, call_api, kube_api
from components.stage import COMPONENT_IMAGE

log = structlog.get_logger(__name__)

LABELS = {"app.kubernetes.io/part-of": "apd", "app.kubernetes.io/component": "training"}
LOG_TAIL = 40  # lines of rank 0's log that a failure message quotes
DRAIN_SECONDS = 30.0  # how long the step waits for the end of rank 0's log once the job is over
# The variables that carry S3 credentials, and the key of the S3 Secret each one is read from.
S3_SECRET_KEYS = {
    "APD_S3__ACCESS_KEY": "AWS_ACCESS_KEY_ID",
    "APD_S3__SECRET_KEY": "AWS_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
}
# Names of variables that hold secrets: never written into a job's manifest in clear.
_SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
_RBAC_HINT = (
    "the step's service account needs create, get, list, watch and delete on trainjobs.trainer.kubeflow.org and "
    "pytorchjobs.kubeflow.org, and get and list on pods and pods/log (the chart's trainingJobs.enabled=true)"
)


@dataclass(frozen=True)
class JobKind:
    """One kind of distributed PyTorch job, and where its controller puts rank 0 and the verdict."""

    kind: str
    group: str
    version: str
    plural: str
    succeeded: str  # condition type of success; "Failed" is failure in both kinds
    container: str  # the training container, whose log is streamed
    rank0_selector: str  # label selector of rank 0's pods (one per attempt), ``{name}`` the job's name

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


# Trainer runs a JobSet named after the TrainJob: replicated job "node", one Indexed Job whose completion index is
# the node's rank (PET_NODE_RANK), a label of its pods since Kubernetes 1.28.
TRAINJOB = JobKind(
    kind="TrainJob",
    group="trainer.kubeflow.org",
    version="v1alpha1",
    plural="trainjobs",
    succeeded="Complete",
    container="node",
    rank0_selector="jobset.sigs.k8s.io/jobset-name={name},jobset.sigs.k8s.io/replicatedjob-name=node,"
    "batch.kubernetes.io/job-completion-index=0",
)
# The Training Operator's Master replica is node rank 0; the Workers are ranks 1..n-1.
PYTORCHJOB = JobKind(
    kind="PyTorchJob",
    group="kubeflow.org",
    version="v1",
    plural="pytorchjobs",
    succeeded="Succeeded",
    container="pytorch",
    rank0_selector="training.kubeflow.org/job-name={name},training.kubeflow.org/replica-type=master,"
    "training.kubeflow.org/replica-index=0",
)
KINDS = {"trainjob": TRAINJOB, "pytorchjob": PYTORCHJOB}


class JobsClient(Protocol):
    """The calls of ``kubernetes.client.CustomObjectsApi`` that training jobs use."""

    def get_api_resources(self, group: str, version: str, **kwargs: Any) -> Any: ...

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: Any, **kwargs: Any
    ) -> Any: ...

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kwargs: Any
    ) -> Any: ...

    def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kwargs: Any
    ) -> Any: ...


class PodsClient(Protocol):
    """The calls of ``kubernetes.client.CoreV1Api`` that following rank 0's log uses."""

    def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> Any: ...

    def read_namespaced_pod_log(self, name: str, namespace: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class JobRequest:
    """One distributed run: the job's name and namespace, and what each of its nodes runs."""

    name: str
    namespace: str
    command: tuple[str, ...]
    env: Mapping[str, str]
    nodes: int
    procs_per_node: int

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.procs_per_node < 1:
            raise TrainingJobError(
                f"a distributed run needs at least 1 node and 1 process per node, got nodes={self.nodes} "
                f"procs_per_node={self.procs_per_node}"
            )
        if not self.command or self.command[0] != "torchrun":
            raise TrainingJobError(
                f"the command of a distributed run must start with torchrun (it reads the PET_* variables the "
                f"controllers set), got {list(self.command)}"
            )
        reserved = sorted(name for name in self.env if name.startswith("PET_"))
        if reserved:
            raise TrainingJobError(f"env must not set {', '.join(reserved)}: the training controller sets PET_*")


def new_job_name() -> str:
    """A fresh job name, a DNS-1035 label as both controllers require."""
    return f"apd-train-{uuid.uuid4().hex[:8]}"


def container_env(env: Mapping[str, str], s3_secret: str | None) -> list[dict[str, Any]]:
    """``env`` as the container's EnvVars, sorted; the S3 credentials by secretKeyRef from ``s3_secret``.

    Raises:
        TrainingJobError: a variable that holds a secret would be written in clear.
    """
    plain = {k: v for k, v in env.items() if not (s3_secret and k in S3_SECRET_KEYS)}
    secrets = sorted(name for name in plain if _SECRET_NAME.search(name))
    if secrets:
        raise TrainingJobError(
            f"{', '.join(secrets)} would be written into the training job in clear: set APD_TRAINJOB__S3_SECRET to "
            "the Secret holding AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the job's namespace (the chart's "
            "<fullname>-s3 or s3.existingSecret), and pass no other secret in env"
        )
    variables: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(plain.items())]
    if s3_secret:
        variables += [
            {"name": name, "valueFrom": {"secretKeyRef": {"name": s3_secret, "key": key}}}
            for name, key in S3_SECRET_KEYS.items()
        ]
    return variables


def node_resources(settings: TrainingJobSettings, procs_per_node: int) -> dict[str, Any]:
    """Requests and limits of one node's pod: the CPU and memory of the settings, GPUs one per process unless set."""
    gpus = procs_per_node if settings.gpus is None else settings.gpus
    requests: dict[str, Any] = {"cpu": settings.cpu, "memory": settings.memory}
    limits = {**requests, settings.accelerator: gpus} if gpus else dict(requests)
    return {"requests": requests, "limits": limits}


def _metadata(request: JobRequest) -> dict[str, Any]:
    return {"name": request.name, "namespace": request.namespace, "labels": dict(LABELS)}


def trainjob_manifest(request: JobRequest, settings: TrainingJobSettings) -> dict[str, Any]:
    """The TrainJob (trainer.kubeflow.org/v1alpha1) on the ``settings.runtime`` ClusterTrainingRuntime."""
    # torchrun's output reaches the log line by line (the Training Operator sets this itself; Trainer does not).
    env = {"PYTHONUNBUFFERED": "1", **request.env}
    spec: dict[str, Any] = {
        "runtimeRef": {"apiGroup": TRAINJOB.group, "kind": "ClusterTrainingRuntime", "name": settings.runtime},
        "activeDeadlineSeconds": math.ceil(settings.timeout_seconds),
        "trainer": {
            "image": settings.image or COMPONENT_IMAGE,
            "command": list(request.command),
            "env": container_env(env, settings.s3_secret),
            "numNodes": request.nodes,
            "numProcPerNode": request.procs_per_node,
            "resourcesPerNode": node_resources(settings, request.procs_per_node),
        },
    }
    if settings.service_account:
        # The TrainJob has no pod fields of its own: a runtime patch sets them on the runtime's "node" pods.
        pod = {"template": {"spec": {"serviceAccountName": settings.service_account}}}
        jobs = [{"name": "node", "template": {"spec": pod}}]
        spec["runtimePatches"] = [
            {"manager": "apd/train-step", "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": jobs}}}}
        ]
    return {"apiVersion": TRAINJOB.api_version, "kind": TRAINJOB.kind, "metadata": _metadata(request), "spec": spec}


def pytorchjob_manifest(request: JobRequest, settings: TrainingJobSettings) -> dict[str, Any]:
    """The PyTorchJob (kubeflow.org/v1): a Master (node rank 0) and ``nodes - 1`` Workers."""
    pod_spec: dict[str, Any] = {
        "containers": [
            {
                "name": PYTORCHJOB.container,
                "image": settings.image or COMPONENT_IMAGE,
                "command": list(request.command),
                "env": container_env(request.env, settings.s3_secret),
                "resources": node_resources(settings, request.procs_per_node),
            }
        ]
    }
    if settings.service_account:
        pod_spec["serviceAccountName"] = settings.service_account
    template = {"metadata": {"labels": dict(LABELS)}, "spec": pod_spec}
    replicas = {"Master": 1, "Worker": request.nodes - 1}
    return {
        "apiVersion": PYTORCHJOB.api_version,
        "kind": PYTORCHJOB.kind,
        "metadata": _metadata(request),
        "spec": {
            "nprocPerNode": str(request.procs_per_node),
            "runPolicy": {"activeDeadlineSeconds": math.ceil(settings.timeout_seconds)},
            "pytorchReplicaSpecs": {
                role: {"replicas": count, "restartPolicy": "Never", "template": template}
                for role, count in replicas.items()
                if count
            },
        },
    }


def manifest(kind: JobKind, request: JobRequest, settings: TrainingJobSettings) -> dict[str, Any]:
    """The job of ``kind`` for ``request``."""
    build = trainjob_manifest if kind is TRAINJOB else pytorchjob_manifest
    return build(request, settings)


def _api(fn: Callable[..., Any], *args: Any, verb: str, what: str, **kwargs: Any) -> Any:
    """A call of the Kubernetes API, its refusals as TrainingJobErrors that say what to fix."""

    def refused(exc: Exception) -> TrainingJobError:
        status, message = getattr(exc, "status", None), api_message(exc)
        if status == 403:
            return TrainingJobError(f"forbidden to {verb} {what}: {_RBAC_HINT}. {message}".rstrip())
        return TrainingJobError(
            f"the Kubernetes API answered {status} {getattr(exc, 'reason', '')} to {verb} {what}: {message}"
        )

    def unreachable(exc: Exception) -> TrainingJobError:
        return TrainingJobError(f"cannot reach the Kubernetes API server to {verb} {what}: {exc}")

    return call_api(fn, *args, refused=refused, unreachable=unreachable, **kwargs)


def _served(api: JobsClient, kind: JobKind) -> bool:
    what = f"the API group {kind.api_version}"
    try:
        found = _api(api.get_api_resources, kind.group, kind.version, verb="discover", what=what)
    except TrainingJobError as exc:
        if getattr(exc.__cause__, "status", None) == 404:
            return False
        raise
    return any(resource.name == kind.plural for resource in found.resources or [])


def choose_kind(api: JobsClient, setting: str) -> JobKind:
    """The kind ``setting`` names, or with ``auto`` the one the API server serves: TrainJob first."""
    if setting in KINDS:
        return KINDS[setting]
    for kind in (TRAINJOB, PYTORCHJOB):
        if _served(api, kind):
            return kind
    raise TrainingJobError(
        "distributed training (train_nodes > 1) needs Kubeflow Trainer (trainjobs.trainer.kubeflow.org/v1alpha1, "
        "https://www.kubeflow.org/docs/components/trainer/) or the Training Operator (pytorchjobs.kubeflow.org/v1), "
        "and the API server serves neither: install Kubeflow Trainer, or train on one node (train_nodes=1)"
    )


def verdict(kind: JobKind, job: Mapping[str, Any]) -> tuple[bool, str] | None:
    """(succeeded, "reason: message") once the job's status has a true final condition, else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in (kind.succeeded, "Failed"):
            return condition["type"] == kind.succeeded, f"{condition.get('reason', '')}: {condition.get('message', '')}"
    return None


class RankZeroLog:
    """Follows the log of rank 0's pod on a thread: prints every line to ``out`` and keeps the last ``LOG_TAIL``.

    A pod that is replaced (a retry) is followed in turn; after ``finish`` the pods not yet read are read to their end.
    """

    def __init__(self, pods: PodsClient, kind: JobKind, request: JobRequest, poll_seconds: float, out: TextIO) -> None:
        self.tail: deque[str] = deque(maxlen=LOG_TAIL)
        self._pods, self._kind, self._request, self._poll, self._out = pods, kind, request, poll_seconds, out
        self._read: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"log-{request.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self, timeout: float) -> None:
        """Stop looking for new pods; wait up to ``timeout`` seconds for the log being read to end."""
        self._stop.set()
        self._thread.join(timeout)

    def _next_pod(self) -> Any | None:
        selector = self._kind.rank0_selector.format(name=self._request.name)
        what = f"the pods of {self._kind.kind} {self._request.name}"
        listed = _api(
            self._pods.list_namespaced_pod, self._request.namespace, label_selector=selector, verb="list", what=what
        )
        ready = [
            pod
            for pod in listed.items
            if pod.metadata.uid not in self._read and pod.status.phase in ("Running", "Succeeded", "Failed")
        ]
        return max(ready, key=lambda pod: pod.metadata.creation_timestamp) if ready else None

    def _print(self, pod: Any) -> None:
        from kubernetes.watch.watch import iter_resp_lines

        response = _api(
            self._pods.read_namespaced_pod_log,
            pod.metadata.name,
            self._request.namespace,
            container=self._kind.container,
            follow=True,
            _preload_content=False,
            verb="read the log of",
            what=f"pod {pod.metadata.name}",
        )
        try:
            for line in iter_resp_lines(response):
                self.tail.append(line)
                print(line, file=self._out, flush=True)
        finally:
            response.release_conn()

    def _follow(self) -> None:
        from urllib3.exceptions import HTTPError

        while True:
            try:
                pod = self._next_pod()
                if pod is not None:
                    self._read.add(pod.metadata.uid)
                    self._print(pod)
            except (TrainingJobError, HTTPError) as exc:  # the verdict does not depend on the log: go on without it
                log.warning("trainjob_log_unavailable", job=self._request.name, error=str(exc))
                pod = None
            if pod is None:
                if self._stop.is_set():
                    return
                self._stop.wait(self._poll)


def _on_job(fn: Callable[..., Any], kind: JobKind, request: JobRequest, last: Any, verb: str, **kwargs: Any) -> Any:
    """``fn(group, version, namespace, plural, last)`` on the job, ``last`` being its name or its body."""
    what = f"{kind.kind} {request.namespace}/{request.name}"
    return _api(fn, kind.group, kind.version, request.namespace, kind.plural, last, verb=verb, what=what, **kwargs)


def _delete(kind: JobKind, request: JobRequest, jobs: JobsClient) -> None:
    background = {"propagation_policy": "Background"}  # its pods go with it
    _on_job(jobs.delete_namespaced_custom_object, kind, request, request.name, "delete", **background)
    log.info("trainjob_deleted", kind=kind.kind, job=request.name, namespace=request.namespace)


def _wait(kind: JobKind, request: JobRequest, timeout: float, poll: float, jobs: JobsClient) -> tuple[bool, str] | None:
    """The job's verdict, or None when ``timeout`` seconds passed first."""
    deadline = time.monotonic() + timeout
    while True:
        found = verdict(kind, _on_job(jobs.get_namespaced_custom_object, kind, request, request.name, "read"))
        left = deadline - time.monotonic()
        if found is not None or left <= 0:
            return found
        time.sleep(min(poll, left))


def _last_lines(follower: RankZeroLog) -> str:
    if not follower.tail:
        return "rank 0 wrote no log (did its pod start?)"
    return "last lines of rank 0's log:\n" + "\n".join(follower.tail)


def run_job(  # noqa: PLR0913, PLR0917 - the job, its settings, the two API clients and the log's destination
    kind: JobKind,
    request: JobRequest,
    settings: TrainingJobSettings,
    jobs: JobsClient,
    pods: PodsClient,
    out: TextIO | None = None,
) -> None:
    """Create the job, stream rank 0's log to ``out`` (stdout) and wait for its verdict; delete it unless it failed.

    Raises:
        TrainingJobError: the job could not be created, failed, or did not finish within the timeout.
    """
    what = f"{kind.kind} {request.namespace}/{request.name}"
    _on_job(jobs.create_namespaced_custom_object, kind, request, manifest(kind, request, settings), "create")
    log.info("trainjob_created", kind=kind.kind, job=request.name, namespace=request.namespace, nodes=request.nodes)
    follower = RankZeroLog(pods, kind, request, settings.poll_seconds, out or sys.stdout)
    follower.start()
    try:
        found = _wait(kind, request, settings.timeout_seconds, settings.poll_seconds, jobs)
    except BaseException:  # the step is stopping (or lost the API server): leave no job running behind it
        try:
            _delete(kind, request, jobs)
        except TrainingJobError as exc:
            log.warning("trainjob_not_deleted", job=request.name, error=str(exc))
        follower.finish(0)
        raise
    if found is None:
        _delete(kind, request, jobs)  # its pods stop, so rank 0's log ends
    follower.finish(DRAIN_SECONDS)
    if found is None:
        raise TrainingJobError(
            f"{what} did not finish within {settings.timeout_seconds:g} s (APD_TRAINJOB__TIMEOUT_SECONDS) and was "
            f"deleted; {_last_lines(follower)}"
        )
    succeeded, reason = found
    if not succeeded:
        raise TrainingJobError(
            f"{what} failed ({reason}); {_last_lines(follower)}\nThe job is kept: kubectl describe {kind.plural} "
            f"{request.name} -n {request.namespace}; kubectl delete {kind.plural} {request.name} -n {request.namespace}"
        )
    log.info("trainjob_succeeded", kind=kind.kind, job=request.name, namespace=request.namespace)
    _delete(kind, request, jobs)


def run_distributed(
    command: list[str],
    env: dict[str, str],
    nodes: int,
    procs_per_node: int,
    *,
    settings: TrainingJobSettings | None = None,
) -> None:
    """Create a TrainJob (or PyTorchJob) running ``command`` (which starts with "torchrun") on ``nodes`` pods with
    ``procs_per_node`` processes each, wait for it, stream its logs, raise TrainingJobError if it fails.

    ``settings`` defaults to ``Settings().trainjob`` (``APD_TRAINJOB__*``); the job goes to its namespace, else the
    step pod's own. S3 credentials in ``env`` are passed from ``settings.s3_secret`` by reference, never in clear.
    """
    settings = settings or Settings().trainjob
    from kubernetes import client

    try:
        api, own_namespace = kube_api()
    except DeployError as exc:
        raise TrainingJobError(str(exc)) from exc
    request = JobRequest(
        name=new_job_name(),
        namespace=settings.namespace or own_namespace,
        command=tuple(command),
        env=dict(env),
        nodes=nodes,
        procs_per_node=procs_per_node,
    )
    jobs = cast(JobsClient, api)  # kube_api's CustomObjectsApi, typed there for the calls rollouts make
    kind = choose_kind(jobs, settings.kind)
    # A cancelled run stops the step with SIGTERM: exit through run_job, which then deletes the job.
    main = threading.current_thread() is threading.main_thread()  # where Python allows signal handlers
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main else None
    try:
        run_job(kind, request, settings, jobs, client.CoreV1Api())
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
