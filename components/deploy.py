"""Deploy: roll a registered model version out to the KServe InferenceService as a canary, then promote or roll back.

The InferenceService's deployment mode decides the patch (annotation ``serving.kserve.io/deploymentMode``, else
``status.deploymentMode``, else ``DeploySettings.default_mode``):

Serverless (alias Knative)
    canary: ``spec.predictor.model.storageUri`` = the version's source and ``spec.predictor.canaryTrafficPercent`` =
    the share. KServe creates a new revision; Knative sends it that share and the rest to
    ``status.components.predictor.latestRolledoutRevision``. The storageUri that served before a fresh canary is kept
    in the annotation ``STABLE_URI_ANNOTATION`` (it changes in the same patch that creates the revision anyway).
    promote: remove ``canaryTrafficPercent`` (KServe's documented promotion: all traffic to the latest ready revision,
    which becomes the rolled-out one, so the next canary starts from it).
    rollback: ``canaryTrafficPercent`` = 0: all traffic back to the rolled-out revision at once, no new revision; with
    ``restore`` the storageUri goes back to the stable one too (a new idle revision of the stable model, at 0 %).
Standard (alias RawDeployment; KServe >= 0.20)
    canary: one entry of ``spec.canary`` named ``v<version>``: the stable predictor's model with the new storageUri
    and ``trafficPercent``; KServe runs it as its own Deployment ``<isvc>-v<version>-predictor``.
    promote: the stable predictor takes the canary's name and model (KServe re-targets it to the canary's Deployment,
    no pod restart) and ``spec.canary`` goes. rollback: ``spec.canary`` goes; the stable predictor was never touched.

Everything that decides a patch is a pure function of (current object, request) -> ``Plan``; ``send`` applies a plan
with the Kubernetes client (a JSON merge patch, RFC 7386: null deletes a field).
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from components.common.errors import DeployError
from components.stage import stage

GROUP, API_VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
STABLE_URI_ANNOTATION = "apd.rollout/stable-storage-uri"  # Serverless: what served 100 % when the canary started
VERSION_ANNOTATION = "apd.rollout/model-version"  # Serverless: the registered model version in spec
FIELD_MANAGER = "apd-rollout"
CONTAINER_NAME = "kserve-container"  # the predictor container's name KServe gives when the spec names none
# URI schemes KServe's storage initializer downloads from (the ones this platform's artifacts can live behind)
STORAGE_SCHEMES = ("s3://", "gs://", "pvc://", "https://")
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

Mode = Literal["Serverless", "Standard"]
MODE_ALIASES: dict[str, Mode] = {
    "Serverless": "Serverless",
    "Knative": "Serverless",
    "Standard": "Standard",
    "RawDeployment": "Standard",
}


class CustomObjectsClient(Protocol):
    """The two calls of ``kubernetes.client.CustomObjectsApi`` that rollouts use."""

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kwargs: Any
    ) -> Any: ...

    def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any, **kwargs: Any
    ) -> Any: ...


@dataclass(frozen=True)
class Change:
    """One field a patch changes; ``None`` stands for absent."""

    path: str
    before: Any
    after: Any


@dataclass(frozen=True)
class Plan:
    """What one command does to the InferenceService: a JSON merge patch ({} = nothing) and notes for the user."""

    action: str
    mode: Mode
    patch: dict[str, Any]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RolloutResult:
    """A plan, the object it was planned on, and whether the patch was sent."""

    isvc: dict[str, Any]
    plan: Plan
    sent: bool
    dry_run: bool
    changes: list[Change] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """One line: the changes, or why there are none."""
        if not self.plan.patch:
            return f"{self.plan.action}: nothing to change" + (f" ({self.plan.notes[0]})" if self.plan.notes else "")
        parts = "; ".join(f"{c.path}: {_show(c.before, c.path)} -> {_show(c.after, c.path)}" for c in self.changes)
        return f"{self.plan.action}{' (dry run)' if self.dry_run else ''}: {parts}"

    def text(self) -> str:
        """What changed (before -> after), the patch as JSON, whether it was sent, and the notes."""
        meta = self.isvc.get("metadata", {})
        lines = [f"rollout {self.plan.action}: InferenceService {meta.get('namespace', '?')}/{meta.get('name', '?')}"]
        lines[0] += f" ({self.plan.mode} mode)"
        if self.plan.patch:
            lines += [f"  {c.path}: {_show(c.before, c.path)} -> {_show(c.after, c.path)}" for c in self.changes]
            lines.append(f"  merge patch: {json.dumps(self.plan.patch, sort_keys=True)}")
            lines.append("  dry run: patch not sent" if self.dry_run else "  patch sent")
        else:
            lines.append("  nothing to change: no patch sent")
        lines += [f"note: {note}" for note in self.plan.notes]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- pure functions


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge key by key, null deletes, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _path(keys: tuple[str, ...]) -> str:
    return "".join(f'["{k}"]' if "." in k or "/" in k else f".{k}" for k in keys).lstrip(".")


def _show(value: Any, path: str = "") -> str:
    if value is None:
        return "(absent)"
    if path == "spec.canary" and isinstance(value, list):  # one item per canary: name, share, model
        return "[" + ", ".join(_show_canary(c) for c in value) + "]"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _show_canary(canary: dict[str, Any]) -> str:
    name, uri = _get(canary, ("predictor", "name")), _get(canary, ("predictor", "model", "storageUri"))
    return f"{name} {canary.get('trafficPercent')} % {uri}"


def changed_fields(isvc: dict[str, Any], patch: dict[str, Any]) -> list[Change]:
    """Each leaf of ``patch`` whose value the patch changes, before and after (absent = None)."""
    after = merge_patch(isvc, patch)
    changes: list[Change] = []

    def walk(node: dict[str, Any], keys: tuple[str, ...]) -> None:
        for key, value in node.items():
            here = (*keys, key)
            if isinstance(value, dict) and value:
                walk(value, here)
            elif _get(isvc, here) != _get(after, here):
                changes.append(Change(_path(here), _get(isvc, here), _get(after, here)))

    walk(patch, ())
    return changes


def deployment_mode(isvc: dict[str, Any], default: Mode) -> Mode:
    """The KServe deployment mode of ``isvc``: its annotation, else its status, else ``default``."""
    declared = _get(isvc, ("metadata", "annotations", MODE_ANNOTATION)) or _get(isvc, ("status", "deploymentMode"))
    if not declared:
        return default
    if declared not in MODE_ALIASES:
        raise DeployError(
            f"InferenceService {_get(isvc, ('metadata', 'name'))} runs in deployment mode {declared!r}: canary "
            f"rollouts work in {', '.join(MODE_ALIASES)} modes only"
        )
    return MODE_ALIASES[declared]


def check_storage_uri(source: str, model_name: str, version: str) -> str:
    """``source`` when KServe's storage initializer can download it, else a DeployError saying how to get there."""
    if source.startswith(STORAGE_SCHEMES):
        return source
    raise DeployError(
        f"model version {version} of {model_name!r} is stored at {source!r}, which KServe's storage initializer "
        f"cannot read (it reads {', '.join(STORAGE_SCHEMES)} URIs). Keep MLflow's artifacts on the object store: "
        "start the MLflow server with '--default-artifact-root s3://<bucket>/<prefix> --no-serve-artifacts' (with "
        "proxied artifacts, model sources are mlflow-artifacts:/ URIs), or set APD_MLFLOW__ARTIFACT_ROOT="
        "s3://<bucket>/<prefix> with a new experiment name (APD_MLFLOW__EXPERIMENT; an experiment keeps its "
        "artifact location), then train and register the model again"
    )


def _check_percent(percent: int) -> int:
    if not 0 <= percent <= 100:
        raise DeployError(f"canary traffic percent must be between 0 and 100, got {percent}")
    return percent


def _predictor(isvc: dict[str, Any]) -> dict[str, Any]:
    predictor = _get(isvc, ("spec", "predictor"))
    if not isinstance(predictor, dict) or not isinstance(predictor.get("model"), dict):
        raise DeployError(
            f"InferenceService {_get(isvc, ('metadata', 'name'))} has no spec.predictor.model: rollouts patch "
            "spec.predictor.model.storageUri, the predictor shape this platform's chart renders"
        )
    return predictor


def _single_canary(isvc: dict[str, Any]) -> dict[str, Any] | None:
    canaries = _get(isvc, ("spec", "canary")) or []
    if len(canaries) > 1:
        names = ", ".join(str(_get(c, ("predictor", "name"))) for c in canaries)
        raise DeployError(
            f"spec.canary holds {len(canaries)} canaries ({names}); apd rollout manages one: edit the "
            "InferenceService by hand (kubectl edit isvc) to keep at most one"
        )
    return canaries[0] if canaries else None


def canary_plan(
    isvc: dict[str, Any],
    percent: int,
    storage_uri: str | None,
    model_version: str | None,
    default_mode: Mode,
) -> Plan:
    """Start a canary of ``storage_uri`` at ``percent`` %, or (``storage_uri`` None) change the running one's share."""
    _check_percent(percent)
    mode = deployment_mode(isvc, default_mode)
    predictor = _predictor(isvc)
    if mode == "Serverless":
        return _serverless_canary(predictor, percent, storage_uri, model_version)
    return _standard_canary(isvc, predictor, percent, storage_uri, model_version)


def _serverless_canary(predictor: dict[str, Any], percent: int, uri: str | None, version: str | None) -> Plan:
    current_uri = predictor["model"].get("storageUri")
    # A canary runs while the field is set below 100 (at 100, or absent, the latest revision serves everything).
    running = predictor.get("canaryTrafficPercent", 100) != 100
    if uri is None or (running and uri == current_uri):  # change the share of the running canary
        if not running:
            raise DeployError("no canary is running (spec.predictor.canaryTrafficPercent unset or 100): pass --version")
        if predictor["canaryTrafficPercent"] == percent:
            return Plan("canary", "Serverless", {}, (f"the canary already gets {percent} %",))
        return Plan("canary", "Serverless", {"spec": {"predictor": {"canaryTrafficPercent": percent}}})
    if uri == current_uri:
        raise DeployError(
            f"model version {version} ({uri}) is already the model in spec.predictor: a canary needs another version"
        )
    annotations: dict[str, str] = {}
    if version is not None:
        annotations[VERSION_ANNOTATION] = str(version)
    if not running and current_uri:  # a fresh canary: remember what serves now, for rollback --restore
        annotations[STABLE_URI_ANNOTATION] = current_uri
    patch: dict[str, Any] = {"spec": {"predictor": {"canaryTrafficPercent": percent, "model": {"storageUri": uri}}}}
    if annotations:
        patch["metadata"] = {"annotations": annotations}
    return Plan("canary", "Serverless", patch)


def _standard_canary(
    isvc: dict[str, Any], predictor: dict[str, Any], percent: int, uri: str | None, version: str | None
) -> Plan:
    canary = _single_canary(isvc)
    canary_uri = _get(canary, ("predictor", "model", "storageUri"))
    if uri is None or (canary is not None and uri == canary_uri):  # change the share of the running canary
        if canary is None:
            raise DeployError("no canary is running (spec.canary is empty): pass --version")
        if canary.get("trafficPercent") == percent:
            return Plan("canary", "Standard", {}, (f"the canary already gets {percent} %",))
        return Plan("canary", "Standard", {"spec": {"canary": [{**canary, "trafficPercent": percent}]}})
    name = f"v{version}" if version is not None else "canary"
    if uri == predictor["model"].get("storageUri") or predictor.get("name") == name:
        raise DeployError(
            f"model version {version} ({uri}) is already the stable predictor's model: a canary needs another version"
        )
    # The stable predictor's model with the new storageUri; autoscaling fields stay with the stable predictor.
    # The v0.20 CRD requires a container name in a canary's model (not in spec.predictor.model): KServe's own.
    model = {"name": CONTAINER_NAME, **predictor["model"], "storageUri": uri}
    entry = {"trafficPercent": percent, "predictor": {"name": name, "model": model}}
    notes: tuple[str, ...] = ()
    if canary is not None:
        notes = (f"replaces the running canary {_get(canary, ('predictor', 'name'))}",)
    return Plan("canary", "Standard", {"spec": {"canary": [entry]}}, notes)


def promote_plan(isvc: dict[str, Any], default_mode: Mode) -> Plan:
    """Make the canary the stable model and send it all traffic."""
    mode = deployment_mode(isvc, default_mode)
    predictor = _predictor(isvc)
    if mode == "Serverless":
        if "canaryTrafficPercent" not in predictor:
            return Plan("promote", mode, {}, ("no canary is running: the latest revision already gets all traffic",))
        stable_uri = _get(isvc, ("metadata", "annotations", STABLE_URI_ANNOTATION))
        if predictor["canaryTrafficPercent"] == 0 and predictor["model"].get("storageUri") != stable_uri:
            raise DeployError(
                "the canary was rolled back (canaryTrafficPercent 0): promoting would send all traffic to the model "
                "you rolled back from. Raise its share first (apd rollout canary --percent N), or run "
                "'apd rollout rollback --restore' to put the stable model back in spec"
            )
        return Plan(
            "promote",
            mode,
            {"spec": {"predictor": {"canaryTrafficPercent": None}}},
            (
                "all traffic goes to the latest ready revision, which becomes the rolled-out one; check with "
                "'apd rollout status'",
            ),
        )
    canary = _single_canary(isvc)
    if canary is None:
        return Plan("promote", mode, {}, ("no canary is running (spec.canary is empty)",))
    canary_predictor = canary.get("predictor", {})
    patch = {
        "spec": {
            "predictor": {"name": canary_predictor.get("name"), "model": canary_predictor.get("model", {})},
            "canary": None,
        }
    }
    note = "KServe re-targets the stable predictor to the canary's Deployment (no restart) and removes the old one"
    return Plan("promote", mode, patch, (note,))


def rollback_plan(isvc: dict[str, Any], default_mode: Mode, restore: bool = False) -> Plan:
    """Send all traffic back to the stable model; ``restore`` (Serverless) also puts its storageUri back in spec."""
    mode = deployment_mode(isvc, default_mode)
    predictor = _predictor(isvc)
    if mode == "Standard":
        if _single_canary(isvc) is None:
            return Plan("rollback", mode, {}, ("no canary is running (spec.canary is empty)",))
        note = "KServe deletes the canary's Deployment; the stable predictor was never changed, nothing to restore"
        return Plan("rollback", mode, {"spec": {"canary": None}}, (note,))
    if "canaryTrafficPercent" not in predictor:
        return Plan("rollback", mode, {}, ("no canary is running (spec.predictor has no canaryTrafficPercent)",))
    stable_uri = _get(isvc, ("metadata", "annotations", STABLE_URI_ANNOTATION))
    current_uri = predictor["model"].get("storageUri")
    patch: dict[str, Any] = {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    if predictor["canaryTrafficPercent"] == 0:
        patch = {}
    notes = [
        "all traffic goes to the previously rolled-out revision (status latestRolledoutRevision); the canary "
        "revision stays, idle"
    ]
    if restore:
        if not stable_uri:
            raise DeployError(
                f"the storageUri that served before the canary is not recorded (annotation {STABLE_URI_ANNOTATION}):"
                " run 'apd rollout canary --version <stable version> --percent 0' to put it back in spec"
            )
        if stable_uri != current_uri:
            patch = merge_patch(patch, {"spec": {"predictor": {"model": {"storageUri": stable_uri}}}})
            notes.append(
                "KServe creates an idle revision of the stable model (0 %); 'apd rollout promote' then "
                "moves traffic to it once it is ready (same model), or start the next canary"
            )
    elif stable_uri and stable_uri != current_uri:
        notes.append(
            f"spec still names the canary's model {current_uri}; 'apd rollout rollback --restore' puts the "
            f"stable {stable_uri} back (a new idle revision), after which promote is safe"
        )
    elif not stable_uri:
        notes.append(
            "spec still names the canary's model; to put the stable one back run 'apd rollout canary "
            "--version <stable version> --percent 0'"
        )
    return Plan("rollback", mode, patch, tuple(notes))


def _condition(isvc: dict[str, Any], kind: str) -> str:
    """``True``, or ``False (Reason: message)``, of the status condition ``kind``; ``-`` when absent."""
    for cond in _get(isvc, ("status", "conditions")) or []:
        if cond.get("type") == kind:
            state = str(cond.get("status", "Unknown"))
            if state != "True" and cond.get("reason"):
                state += f" ({cond['reason']}: {cond.get('message', '')})"
            return state
    return "-"


def format_status(isvc: dict[str, Any], default_mode: Mode) -> str:
    """The rollout state: the model and share in spec, then per component URL, readiness, revisions and traffic."""
    mode = deployment_mode(isvc, default_mode)
    meta = isvc.get("metadata", {})
    predictor = _get(isvc, ("spec", "predictor")) or {}
    annotations = meta.get("annotations") or {}
    lines = [
        f"InferenceService {meta.get('namespace', '?')}/{meta.get('name', '?')} ({mode} mode)",
        f"  url: {_get(isvc, ('status', 'url')) or '-'}",
        f"  ready: {_condition(isvc, 'Ready')}",
        f"  spec.predictor.model.storageUri: {_get(predictor, ('model', 'storageUri')) or '-'}",
    ]
    if mode == "Serverless":
        lines.append(f"  spec.predictor.canaryTrafficPercent: {_show(predictor.get('canaryTrafficPercent'))}")
        if VERSION_ANNOTATION in annotations:
            lines.append(f"  model version in spec: {annotations[VERSION_ANNOTATION]}")
        if STABLE_URI_ANNOTATION in annotations:
            lines.append(f"  stable storageUri when the last canary started: {annotations[STABLE_URI_ANNOTATION]}")
    else:
        lines.append(f"  spec.predictor.name: {predictor.get('name') or '-'}")
        for canary in _get(isvc, ("spec", "canary")) or []:
            lines.append(
                f"  spec.canary {_get(canary, ('predictor', 'name'))}: {canary.get('trafficPercent')} % -> "
                f"{_get(canary, ('predictor', 'model', 'storageUri'))}"
            )
        for status in _get(isvc, ("status", "canaryStatuses")) or []:
            lines.append(
                f"  canary status {status.get('name')}: ready {status.get('ready')}, {status.get('trafficPercent')} %"
            )
    for name, component in sorted((_get(isvc, ("status", "components")) or {}).items()):
        lines.append(f"  {name}:")
        lines.append(f"    url: {component.get('url') or '-'}")
        lines.append(f"    ready: {_condition(isvc, name.capitalize() + 'Ready')}")
        for key in (
            "latestRolledoutRevision",
            "previousRolledoutRevision",
            "latestCreatedRevision",
            "latestReadyRevision",
        ):
            lines.append(f"    {key}: {component.get(key) or '-'}")
        traffic = component.get("traffic") or []
        lines.append("    traffic:" + ("" if traffic else " -"))
        for target in traffic:
            tag = f" tag={target['tag']}" if target.get("tag") else ""
            lines.append(
                f"      {target.get('revisionName', '?')}: {target.get('percent', 0)} %{tag}"
                f" latestRevision={str(bool(target.get('latestRevision'))).lower()}"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ MLflow and Kubernetes I/O


def resolve_storage_uri(model_name: str, version: str) -> str:
    """The storageUri of registered model version ``version`` (its source), checked readable by KServe."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        model_version = mlflow.MlflowClient().get_model_version(model_name, str(version))
    except MlflowException as exc:
        raise DeployError(
            f"model version {version} of {model_name!r} not found in the MLflow registry at "
            f"{mlflow.get_registry_uri()}: {exc.message}"
        ) from exc
    return check_storage_uri(str(model_version.source), model_name, str(version))


def _api_error(exc: Exception, verb: str, namespace: str, name: str) -> DeployError:
    status = getattr(exc, "status", None)
    try:
        message = json.loads(getattr(exc, "body", "") or "{}").get("message", "")
    except (ValueError, AttributeError):
        message = str(getattr(exc, "body", ""))
    what = f"InferenceService {name} in namespace {namespace}"
    if status == 404:
        return DeployError(
            f"{what} not found: check --isvc and --namespace (APD_DEPLOY__ISVC_NAME, APD_DEPLOY__NAMESPACE) "
            f"and 'kubectl get isvc -n {namespace}'; is KServe installed?"
        )
    if status == 401:
        return DeployError(f"the Kubernetes API server rejected the credentials of your kubeconfig: {message}")
    if status == 403:
        return DeployError(
            f"forbidden to {verb} {what}: the user or service account needs get and patch on "
            f"inferenceservices.serving.kserve.io in {namespace} (a Role and RoleBinding). {message}".rstrip()
        )
    return DeployError(f"the Kubernetes API answered {status} {getattr(exc, 'reason', '')} to {verb} {what}: {message}")


def kube_api() -> tuple[CustomObjectsClient, str]:
    """CustomObjectsApi from the in-cluster config inside a pod, else ~/.kube/config; and the default namespace."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
        namespace = IN_CLUSTER_NAMESPACE.read_text().strip() if IN_CLUSTER_NAMESPACE.is_file() else "default"
    except config.ConfigException:
        try:
            config.load_kube_config()
            _, active = config.list_kube_config_contexts()
        except config.ConfigException as exc:
            raise DeployError(
                f"no Kubernetes configuration: not running in a pod and no usable kubeconfig ({exc}); "
                "set KUBECONFIG or write ~/.kube/config"
            ) from exc
        namespace = (active or {}).get("context", {}).get("namespace") or "default"
    return client.CustomObjectsApi(), namespace


def _call(fn: Any, verb: str, namespace: str, name: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return dict(fn(GROUP, API_VERSION, namespace, PLURAL, name, *args, **kwargs))
    except ApiException as exc:
        raise _api_error(exc, verb, namespace, name) from exc
    except HTTPError as exc:
        raise DeployError(f"cannot reach the Kubernetes API server to {verb} InferenceService {name}: {exc}") from exc


def read_isvc(api: CustomObjectsClient, namespace: str, name: str) -> dict[str, Any]:
    """The InferenceService as the API server has it; DeployError when missing or forbidden."""
    return _call(api.get_namespaced_custom_object, "read", namespace, name)


def send(api: CustomObjectsClient, namespace: str, name: str, plan: Plan, dry_run: bool) -> bool:
    """Send ``plan``'s merge patch (strict field validation); False when dry-run or there is nothing to send."""
    if dry_run or not plan.patch:
        return False
    _call(
        api.patch_namespaced_custom_object,
        "patch",
        namespace,
        name,
        plan.patch,
        field_manager=FIELD_MANAGER,
        field_validation="Strict",
    )
    return True


def rollout(
    action: str,
    api: CustomObjectsClient,
    namespace: str,
    name: str,
    default_mode: Mode,
    *,
    percent: int | None = None,
    model_name: str = "",
    model_version: str | None = None,
    restore: bool = False,
    dry_run: bool = False,
) -> RolloutResult:
    """Read the InferenceService, plan ``action`` (canary, promote, rollback) on it and send the patch."""
    isvc = read_isvc(api, namespace, name)
    if action == "canary":
        if percent is None:
            raise DeployError("give the canary's share with --percent (0-100)")
        uri = resolve_storage_uri(model_name, model_version) if model_version is not None else None
        plan = canary_plan(isvc, percent, uri, model_version, default_mode)
    elif action == "promote":
        plan = promote_plan(isvc, default_mode)
    elif action == "rollback":
        plan = rollback_plan(isvc, default_mode, restore)
    else:
        raise DeployError(f"unknown rollout action {action!r}: canary, promote, rollback or status")
    changes = changed_fields(isvc, plan.patch)
    sent = send(api, namespace, name, plan, dry_run)
    return RolloutResult(isvc, plan, sent, dry_run, changes)


def rollout_status(api: CustomObjectsClient, namespace: str, name: str, default_mode: Mode) -> str:
    """``format_status`` of the InferenceService as the API server has it."""
    return format_status(read_isvc(api, namespace, name), default_mode)


@stage
def deploy(model_version: str, canary_percent: int = 0, isvc_name: str = "apd-detector", namespace: str = "") -> str:
    """Start a canary of the registered model version on the KServe InferenceService (``apd rollout canary``).

    Args:
        model_version: The registered model version to roll out (the register step's output).
        canary_percent: Share of requests (percent, 0-100) the new version gets; 0 rolls nothing out and says so.
        isvc_name: The InferenceService to patch, in the step's cluster.
        namespace: Its namespace; empty: APD_DEPLOY__NAMESPACE, else the step pod's own namespace.

    Returns:
        One line: the fields the patch changed (before -> after), or why nothing was rolled out.
    """
    from components.common.logging import configure_logging
    from components.common.settings import Settings
    from components.common.tracking import setup_tracking
    from components.deploy import kube_api, rollout

    settings = Settings()
    configure_logging(settings.logging)
    if canary_percent == 0:
        summary = f"canary_percent is 0: model version {model_version} stays registered, not rolled out"
        print(summary)
        return summary
    setup_tracking(settings.mlflow)
    api, pod_namespace = kube_api()
    result = rollout(
        "canary",
        api,
        namespace or settings.deploy.namespace or pod_namespace,
        isvc_name,
        settings.deploy.default_mode,
        percent=canary_percent,
        model_name=settings.mlflow.model_name,
        model_version=model_version,
    )
    print(result.text())
    return result.summary
