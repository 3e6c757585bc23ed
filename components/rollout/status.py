"""Rollout state as text: the model and share in the InferenceService's spec, and what KServe reports serving."""

import json
from typing import Any

from components.rollout.patch import Change, lookup
from components.rollout.plans import (
    STABLE_URI_ANNOTATION,
    STORAGE_URI_ENV,
    VERSION_ANNOTATION,
    Mode,
    deployment_mode,
)


def show_value(value: Any, path: str = "") -> str:
    """A field's value as rollout output prints it: ``(absent)``, a string as is, canaries by name, the explainer's
    containers by their model, else JSON."""
    if value is None:
        return "(absent)"
    if path == "spec.canary" and isinstance(value, list):  # one item per canary: name, share, model
        return "[" + ", ".join(_show_canary(c) for c in value) + "]"
    if path == "spec.explainer.containers" and isinstance(value, list):  # the rest of the containers stays
        return f"{STORAGE_URI_ENV}={_explainer_uri({'containers': value}) or '-'}"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def show_change(change: Change) -> str:
    """``path: before -> after`` of one field a patch changes."""
    return f"{change.path}: {show_value(change.before, change.path)} -> {show_value(change.after, change.path)}"


def _show_canary(canary: dict[str, Any]) -> str:
    name, uri = lookup(canary, ("predictor", "name")), lookup(canary, ("predictor", "model", "storageUri"))
    return f"{name} {canary.get('trafficPercent')} % {uri}"


def _explainer_uri(explainer: dict[str, Any]) -> str | None:
    """The STORAGE_URI of the explainer's first container (the model KServe downloads for it)."""
    containers = explainer.get("containers") or [{}]
    return next((e.get("value") for e in containers[0].get("env") or [] if e.get("name") == STORAGE_URI_ENV), None)


def _condition(isvc: dict[str, Any], kind: str) -> str:
    """``True``, or ``False (Reason: message)``, of the status condition ``kind``; ``-`` when absent."""
    for cond in lookup(isvc, ("status", "conditions")) or []:
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
    predictor = lookup(isvc, ("spec", "predictor")) or {}
    annotations = meta.get("annotations") or {}
    lines = [
        f"InferenceService {meta.get('namespace', '?')}/{meta.get('name', '?')} ({mode} mode)",
        f"  url: {lookup(isvc, ('status', 'url')) or '-'}",
        f"  ready: {_condition(isvc, 'Ready')}",
        f"  spec.predictor.model.storageUri: {lookup(predictor, ('model', 'storageUri')) or '-'}",
    ]
    if mode == "Serverless":
        lines.append(f"  spec.predictor.canaryTrafficPercent: {show_value(predictor.get('canaryTrafficPercent'))}")
        if VERSION_ANNOTATION in annotations:
            lines.append(f"  model version in spec: {annotations[VERSION_ANNOTATION]}")
        if STABLE_URI_ANNOTATION in annotations:
            lines.append(f"  stable storageUri when the last canary started: {annotations[STABLE_URI_ANNOTATION]}")
    else:
        lines.append(f"  spec.predictor.name: {predictor.get('name') or '-'}")
        for canary in lookup(isvc, ("spec", "canary")) or []:
            lines.append(
                f"  spec.canary {lookup(canary, ('predictor', 'name'))}: {canary.get('trafficPercent')} % -> "
                f"{lookup(canary, ('predictor', 'model', 'storageUri'))}"
            )
        for status in lookup(isvc, ("status", "canaryStatuses")) or []:
            lines.append(
                f"  canary status {status.get('name')}: ready {status.get('ready')}, {status.get('trafficPercent')} %"
            )
    explainer = lookup(isvc, ("spec", "explainer"))
    if isinstance(explainer, dict):
        lines.append(f"  spec.explainer {STORAGE_URI_ENV}: {_explainer_uri(explainer) or '-'}")
        if mode == "Serverless":
            lines.append(f"  spec.explainer.canaryTrafficPercent: {show_value(explainer.get('canaryTrafficPercent'))}")
    for name, component in sorted((lookup(isvc, ("status", "components")) or {}).items()):
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
