"""Fakes of the Kubernetes API (no API server can run on these machines): the CustomObjectsApi for InferenceServices,
and an API server with a training controller for distributed training jobs and their pods."""

import copy
import datetime
import json
from typing import Any

from kubernetes.client import V1APIResource, V1APIResourceList, V1ObjectMeta, V1Pod, V1PodList, V1PodStatus
from kubernetes.client.exceptions import ApiException

ISVC_API = ("serving.kserve.io", "v1beta1", "inferenceservices")


def _apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, kept apart from the code under test: null removes a member, objects merge, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _apply_merge_patch(merged.get(key), value)
    return merged


def _api_exception(status: int, reason: str, message: str) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps({"kind": "Status", "status": "Failure", "message": message, "code": status})
    return exc


class FakeCustomObjectsApi:
    """A fake of ``kubernetes.client.CustomObjectsApi``, because no Kubernetes API server can run here.

    It stores InferenceService dicts by (namespace, name), answers ``get`` with a copy, applies each ``patch`` with
    JSON merge-patch semantics (RFC 7386, the content type the real client sends for custom objects), bumps
    ``metadata.generation``, and records every patch in ``patches``. A missing object answers 404 and a verb listed in
    ``forbidden`` answers 403, with the Status body the API server sends.
    """

    def __init__(self, *objects: dict[str, Any], forbidden: tuple[str, ...] = ()) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        for obj in objects:
            meta = obj["metadata"]
            self.objects[(meta["namespace"], meta["name"])] = copy.deepcopy(obj)
        self.forbidden = set(forbidden)
        self.patches: list[dict[str, Any]] = []
        self.gets = 0

    def _lookup(self, verb: str, group: str, version: str, namespace: str, plural: str, name: str) -> dict[str, Any]:
        if verb in self.forbidden:
            raise _api_exception(
                403,
                "Forbidden",
                f'inferenceservices.serving.kserve.io "{name}" is forbidden: User "dev" cannot {verb} resource '
                f'"inferenceservices" in API group "serving.kserve.io" in the namespace "{namespace}"',
            )
        if (group, version, plural) != ISVC_API or (namespace, name) not in self.objects:
            raise _api_exception(404, "Not Found", f'{plural}.{group} "{name}" not found')
        return self.objects[(namespace, name)]

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kwargs: Any
    ) -> dict[str, Any]:
        self.gets += 1
        return copy.deepcopy(self._lookup("get", group, version, namespace, plural, name))

    def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any, **kwargs: Any
    ) -> dict[str, Any]:
        current = self._lookup("patch", group, version, namespace, plural, name)
        self.patches.append({"namespace": namespace, "name": name, "body": copy.deepcopy(body), "kwargs": kwargs})
        patched = _apply_merge_patch(current, body)
        patched["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
        self.objects[(namespace, name)] = patched
        return copy.deepcopy(patched)

    def stored(self, namespace: str, name: str) -> dict[str, Any]:
        """A copy of the object as the fake now holds it."""
        return copy.deepcopy(self.objects[(namespace, name)])


# The API of each training job kind: (group, version, plural, kind).
TRAINJOB_API = ("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob")
PYTORCHJOB_API = ("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob")
NOTEBOOK_API = ("kubeflow.org", "v1", "notebooks", "Notebook")  # kubeflow.org served without the Training Operator


class FakeLogResponse:
    """The streamed body of a followed pod log, in chunks that cut lines in two (as HTTP chunks do)."""

    def __init__(self, lines: list[str]) -> None:
        self.text = "".join(f"{line}\n" for line in lines).encode()
        self.released = False

    def stream(self, amt: int | None = None, decode_content: bool | None = None) -> Any:
        for start in range(0, len(self.text), 7):
            yield self.text[start : start + 7]

    def release_conn(self) -> None:
        self.released = True

    def close(self) -> None:
        self.released = True


class FakeTrainingCluster:
    """A fake of the Kubernetes API server with a training controller behind it (no cluster can run here).

    It answers both the ``CustomObjectsApi`` calls on training jobs and the ``CoreV1Api`` calls on their pods. API
    discovery serves the ``served`` (group, version, plural, kind) tuples and answers 404 for any other group/version.
    A created job gets one pod per node, labelled as Kubeflow Trainer v2.3.0's JobSet with its Indexed Job (TrainJob)
    or the Training Operator v1.9 (PyTorchJob) label them; node rank ``r`` logs ``logs`` when ``r == 0``, else
    ``rank r``. The ``finish_after``-th read of the job adds ``outcome`` (a status condition) to its status; with no
    outcome the job never finishes. A verb listed in ``forbidden`` answers 403. ``created``, ``deleted`` and
    ``log_reads`` record the calls.
    """

    def __init__(
        self,
        served: tuple[tuple[str, str, str, str], ...] = (TRAINJOB_API,),
        *,
        outcome: dict[str, Any] | None = None,
        finish_after: int = 2,
        logs: tuple[str, ...] = (),
        rank0_phase: str = "Succeeded",
        forbidden: tuple[str, ...] = (),
    ) -> None:
        self.served, self.outcome, self.finish_after = served, outcome, finish_after
        self.logs, self.rank0_phase, self.forbidden = list(logs), rank0_phase, set(forbidden)
        self.jobs: dict[tuple[str, str, str], dict[str, Any]] = {}  # (plural, namespace, name) -> job
        self.pods: dict[str, tuple[Any, list[str]]] = {}  # pod name -> (V1Pod, log lines)
        self.created: list[dict[str, Any]] = []
        self.deleted: list[dict[str, Any]] = []
        self.log_reads: list[dict[str, Any]] = []
        self.reads = 0

    def _check(self, verb: str, group: str, version: str, plural: str, namespace: str) -> None:
        if verb in self.forbidden:
            raise _api_exception(
                403,
                "Forbidden",
                f'{plural}.{group} is forbidden: User "system:serviceaccount:{namespace}:pipeline-runner" cannot '
                f'{verb} resource "{plural}" in API group "{group}" in the namespace "{namespace}"',
            )
        if not any(api[:3] == (group, version, plural) for api in self.served):
            raise _api_exception(404, "Not Found", "the server could not find the requested resource")

    def get_api_resources(self, group: str, version: str, **kwargs: Any) -> V1APIResourceList:
        resources = [
            V1APIResource(kind=kind, name=plural, namespaced=True, singular_name="", verbs=["create", "get"])
            for g, v, plural, kind in self.served
            if (g, v) == (group, version)
        ]
        if not resources:
            raise _api_exception(404, "Not Found", "the server could not find the requested resource")
        return V1APIResourceList(group_version=f"{group}/{version}", resources=resources)

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: Any, **kwargs: Any
    ) -> dict[str, Any]:
        self._check("create", group, version, plural, namespace)
        job = copy.deepcopy(body)
        self.created.append(copy.deepcopy(body))
        self.jobs[(plural, namespace, job["metadata"]["name"])] = job
        self._start_pods(job)
        return copy.deepcopy(job)

    def _start_pods(self, job: dict[str, Any]) -> None:
        name, spec = job["metadata"]["name"], job["spec"]
        if job["kind"] == "TrainJob":
            nodes = spec["trainer"]["numNodes"]
            for rank in range(nodes):
                labels = {
                    "jobset.sigs.k8s.io/jobset-name": name,
                    "jobset.sigs.k8s.io/replicatedjob-name": "node",
                    "batch.kubernetes.io/job-completion-index": str(rank),
                }
                self._add_pod(f"{name}-node-0-{rank}-x{rank}", rank, labels)
            return
        workers = spec["pytorchReplicaSpecs"].get("Worker", {}).get("replicas", 0)
        for role, count in (("master", 1), ("worker", workers)):
            for index in range(count):
                labels = {
                    "training.kubeflow.org/job-name": name,
                    "training.kubeflow.org/replica-type": role,
                    "training.kubeflow.org/replica-index": str(index),
                }
                self._add_pod(f"{name}-{role}-{index}", index + (role == "worker"), labels)

    def _add_pod(self, name: str, rank: int, labels: dict[str, str]) -> None:
        metadata = V1ObjectMeta(
            name=name,
            uid=f"uid-{name}",
            labels=labels,
            # the higher ranks' pods are the newer ones: the newest pod alone is not rank 0
            creation_timestamp=datetime.datetime(2026, 1, 1, 0, 0, rank, tzinfo=datetime.UTC),
        )
        phase = self.rank0_phase if rank == 0 else "Running"
        lines = list(self.logs) if rank == 0 else [f"rank {rank}"]
        self.pods[name] = (V1Pod(metadata=metadata, status=V1PodStatus(phase=phase)), lines)

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kwargs: Any
    ) -> dict[str, Any]:
        self._check("get", group, version, plural, namespace)
        job = self.jobs.get((plural, namespace, name))
        if job is None:
            raise _api_exception(404, "Not Found", f'{plural}.{group} "{name}" not found')
        self.reads += 1
        if self.outcome is not None and self.reads >= self.finish_after:
            job.setdefault("status", {})["conditions"] = [copy.deepcopy(self.outcome)]
        return copy.deepcopy(job)

    def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kwargs: Any
    ) -> dict[str, Any]:
        self._check("delete", group, version, plural, namespace)
        if self.jobs.pop((plural, namespace, name), None) is None:
            raise _api_exception(404, "Not Found", f'{plural}.{group} "{name}" not found')
        self.deleted.append({"plural": plural, "namespace": namespace, "name": name, "kwargs": kwargs})
        self.pods = {pod: entry for pod, entry in self.pods.items() if not pod.startswith(f"{name}-")}
        return {"kind": "Status", "status": "Success"}

    def list_namespaced_pod(self, namespace: str, label_selector: str = "", **kwargs: Any) -> V1PodList:
        wanted = dict(term.split("=", 1) for term in label_selector.split(",") if term)
        items = [pod for pod, _ in self.pods.values() if wanted.items() <= (pod.metadata.labels or {}).items()]
        return V1PodList(items=items)

    def read_namespaced_pod_log(self, name: str, namespace: str, **kwargs: Any) -> FakeLogResponse:
        self.log_reads.append({"pod": name, **kwargs})
        return FakeLogResponse(self.pods[name][1])
