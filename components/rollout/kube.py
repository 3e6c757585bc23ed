"""Kubernetes I/O for rollouts: the API client, reading the InferenceService, sending a plan's merge patch, and
the API server's errors as DeployErrors that say what to fix. ``kube_api``, ``call_api`` and ``api_message`` serve
the distributed training jobs (``components.trainjob``) too.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from components.common.errors import DeployError, DetectorError
from components.rollout.plans import Plan

GROUP, API_VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
FIELD_MANAGER = "apd-rollout"
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class CustomObjectsClient(Protocol):
    """The two calls of ``kubernetes.client.CustomObjectsApi`` that rollouts use."""

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kwargs: Any
    ) -> Any: ...

    def patch_namespaced_custom_object(  # noqa: PLR0913, PLR0917 - the kubernetes client's own signature
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any, **kwargs: Any
    ) -> Any: ...


def api_message(exc: Exception) -> str:
    """The message of the Status the API server answered with (its body), or the body as it came."""
    try:
        return str(json.loads(getattr(exc, "body", "") or "{}").get("message", ""))
    except (ValueError, AttributeError):
        return str(getattr(exc, "body", ""))


def call_api(
    fn: Callable[..., Any],
    *args: Any,
    refused: Callable[[Exception], DetectorError],
    unreachable: Callable[[Exception], DetectorError],
    **kwargs: Any,
) -> Any:
    """``fn(*args, **kwargs)`` with an answer of the API server other than success raised as ``refused(exc)`` and a
    connection that failed as ``unreachable(exc)``: the caller's domain errors, which say what to fix."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return fn(*args, **kwargs)
    except ApiException as exc:
        raise refused(exc) from exc
    except HTTPError as exc:
        raise unreachable(exc) from exc


def _api_error(exc: Exception, verb: str, namespace: str, name: str) -> DeployError:
    status = getattr(exc, "status", None)
    message = api_message(exc)
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
    return dict(
        call_api(
            fn,
            GROUP,
            API_VERSION,
            namespace,
            PLURAL,
            name,
            *args,
            refused=lambda exc: _api_error(exc, verb, namespace, name),
            unreachable=lambda exc: DeployError(
                f"cannot reach the Kubernetes API server to {verb} InferenceService {name}: {exc}"
            ),
            **kwargs,
        )
    )


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
