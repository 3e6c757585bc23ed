"""Rollout plans: what a canary, promote or rollback command changes on the InferenceService, per deployment mode.

Pure functions of (current object, request) -> ``Plan``; nothing here talks to a cluster.
"""

from dataclasses import dataclass, replace
from typing import Any, Literal

from components.common.errors import DeployError
from components.rollout.patch import lookup, merge_patch

MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
STABLE_URI_ANNOTATION = "apd.rollout/stable-storage-uri"  # Serverless: what served 100 % when the canary started
VERSION_ANNOTATION = "apd.rollout/model-version"  # Serverless: the registered model version in spec
CONTAINER_NAME = "kserve-container"  # the predictor container's name KServe gives when the spec names none
STORAGE_URI_ENV = "STORAGE_URI"  # a custom container's model, which KServe's storage initializer downloads

Mode = Literal["Serverless", "Standard"]
MODE_ALIASES: dict[str, Mode] = {
    "Serverless": "Serverless",
    "Knative": "Serverless",
    "Standard": "Standard",
    "RawDeployment": "Standard",
}


@dataclass(frozen=True)
class Plan:
    """What one command does to the InferenceService: a JSON merge patch ({} = nothing) and notes for the user."""

    action: str
    mode: Mode
    patch: dict[str, Any]
    notes: tuple[str, ...] = ()


def deployment_mode(isvc: dict[str, Any], default: Mode) -> Mode:
    """The KServe deployment mode of ``isvc``: its annotation, else its status, else ``default``."""
    declared = lookup(isvc, ("metadata", "annotations", MODE_ANNOTATION)) or lookup(isvc, ("status", "deploymentMode"))
    if not declared:
        return default
    if declared not in MODE_ALIASES:
        raise DeployError(
            f"InferenceService {lookup(isvc, ('metadata', 'name'))} runs in deployment mode {declared!r}: canary "
            f"rollouts work in {', '.join(MODE_ALIASES)} modes only"
        )
    return MODE_ALIASES[declared]


def _check_percent(percent: int) -> int:
    if not 0 <= percent <= 100:
        raise DeployError(f"canary traffic percent must be between 0 and 100, got {percent}")
    return percent


def _predictor(isvc: dict[str, Any]) -> dict[str, Any]:
    predictor = lookup(isvc, ("spec", "predictor"))
    if not isinstance(predictor, dict) or not isinstance(predictor.get("model"), dict):
        raise DeployError(
            f"InferenceService {lookup(isvc, ('metadata', 'name'))} has no spec.predictor.model: rollouts patch "
            "spec.predictor.model.storageUri, the predictor shape this platform's chart renders"
        )
    return predictor


def _single_canary(isvc: dict[str, Any]) -> dict[str, Any] | None:
    canaries = lookup(isvc, ("spec", "canary")) or []
    if len(canaries) > 1:
        names = ", ".join(str(lookup(c, ("predictor", "name"))) for c in canaries)
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
        plan = _serverless_canary(predictor, percent, storage_uri, model_version)
    else:
        plan = _standard_canary(isvc, predictor, percent, storage_uri, model_version)
    return explainer_follows(isvc, plan)


def explainer_follows(isvc: dict[str, Any], plan: Plan) -> Plan:
    """``plan`` with the explainer component following the predictor, so that explanations come from the model that
    answered: the STORAGE_URI of its container and its canaryTrafficPercent become those of ``spec.predictor`` after
    the patch (a Serverless canary moves both; a Standard canary, whose spec.canary entry has no explainer, leaves
    it on the stable model until promote). Unchanged without a patch, or without an explainer whose first container
    names its model in STORAGE_URI (the chart's: KServe's storage initializer downloads that env's URI).
    """
    explainer = lookup(isvc, ("spec", "explainer"))
    if not plan.patch or not isinstance(explainer, dict):
        return plan
    containers = explainer.get("containers") or []
    env = (containers[0].get("env") or []) if containers else []
    if not any(e.get("name") == STORAGE_URI_ENV for e in env):
        return plan
    after = lookup(merge_patch(isvc, plan.patch), ("spec", "predictor")) or {}
    uri, percent = lookup(after, ("model", "storageUri")), after.get("canaryTrafficPercent")
    fields: dict[str, Any] = {}
    if explainer.get("canaryTrafficPercent") != percent:
        fields["canaryTrafficPercent"] = percent  # None removes it, as from the predictor
    if uri and {"name": STORAGE_URI_ENV, "value": uri} not in env:
        # A merge patch replaces lists whole: the containers as they are, with the new STORAGE_URI.
        new_env = [{"name": STORAGE_URI_ENV, "value": uri} if e.get("name") == STORAGE_URI_ENV else e for e in env]
        fields["containers"] = [{**containers[0], "env": new_env}, *containers[1:]]
    if not fields:
        return plan
    return replace(plan, patch={**plan.patch, "spec": {**plan.patch.get("spec", {}), "explainer": fields}})


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
    canary_uri = lookup(canary, ("predictor", "model", "storageUri"))
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
        notes = (f"replaces the running canary {lookup(canary, ('predictor', 'name'))}",)
    return Plan("canary", "Standard", {"spec": {"canary": [entry]}}, notes)


def promote_plan(isvc: dict[str, Any], default_mode: Mode) -> Plan:
    """Make the canary the stable model and send it all traffic (the explainer follows the predictor)."""
    return explainer_follows(isvc, _promote(isvc, default_mode))


def _promote(isvc: dict[str, Any], default_mode: Mode) -> Plan:
    mode = deployment_mode(isvc, default_mode)
    predictor = _predictor(isvc)
    if mode == "Serverless":
        if "canaryTrafficPercent" not in predictor:
            return Plan("promote", mode, {}, ("no canary is running: the latest revision already gets all traffic",))
        stable_uri = lookup(isvc, ("metadata", "annotations", STABLE_URI_ANNOTATION))
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
    """Send all traffic back to the stable model; ``restore`` (Serverless) also puts its storageUri back in spec.
    The explainer follows the predictor."""
    return explainer_follows(isvc, _rollback(isvc, default_mode, restore))


def _rollback(isvc: dict[str, Any], default_mode: Mode, restore: bool) -> Plan:
    mode = deployment_mode(isvc, default_mode)
    predictor = _predictor(isvc)
    if mode == "Standard":
        if _single_canary(isvc) is None:
            return Plan("rollback", mode, {}, ("no canary is running (spec.canary is empty)",))
        note = "KServe deletes the canary's Deployment; the stable predictor was never changed, nothing to restore"
        return Plan("rollback", mode, {"spec": {"canary": None}}, (note,))
    if "canaryTrafficPercent" not in predictor:
        return Plan("rollback", mode, {}, ("no canary is running (spec.predictor has no canaryTrafficPercent)",))
    stable_uri = lookup(isvc, ("metadata", "annotations", STABLE_URI_ANNOTATION))
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
