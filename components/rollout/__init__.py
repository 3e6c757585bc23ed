"""Rollout: roll a registered model version out to the KServe InferenceService as a canary, then promote or roll back.

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
Explainer (``spec.explainer``, the chart's ``apd explain`` container)
    follows the predictor in every plan (``plans.explainer_follows``): the ``STORAGE_URI`` env of its first container
    and its ``canaryTrafficPercent`` become the predictor's after the patch. Serverless: a canary, promote and
    rollback move it with the predictor (its own Knative revisions, the same share). Standard: ``spec.canary``
    entries hold a predictor only, so the explainer stays on the stable model during a canary and gets the canary's
    model on promote.

Everything that decides a patch is a pure function of (current object, request) -> ``Plan`` (``plans``; the merge
patch itself in ``patch``); ``kube.send`` applies a plan with the Kubernetes client (a JSON merge patch, RFC 7386:
null deletes a field). ``registry`` turns a registered model version into the storageUri, ``status`` prints the
state. ``rollout`` and ``rollout_status`` below run one command: read, plan, send.
"""

import json
from dataclasses import dataclass, field
from typing import Any

from components.common.errors import DeployError
from components.rollout.kube import CustomObjectsClient, kube_api, read_isvc, send
from components.rollout.patch import Change, changed_fields
from components.rollout.plans import Mode, Plan, canary_plan, promote_plan, rollback_plan
from components.rollout.registry import resolve_storage_uri
from components.rollout.status import format_status, show_change

__all__ = ["RolloutResult", "kube_api", "rollout", "rollout_status"]


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
        parts = "; ".join(show_change(c) for c in self.changes)
        return f"{self.plan.action}{' (dry run)' if self.dry_run else ''}: {parts}"

    def text(self) -> str:
        """What changed (before -> after), the patch as JSON, whether it was sent, and the notes."""
        meta = self.isvc.get("metadata", {})
        lines = [f"rollout {self.plan.action}: InferenceService {meta.get('namespace', '?')}/{meta.get('name', '?')}"]
        lines[0] += f" ({self.plan.mode} mode)"
        if self.plan.patch:
            lines += [f"  {show_change(c)}" for c in self.changes]
            lines.append(f"  merge patch: {json.dumps(self.plan.patch, sort_keys=True)}")
            lines.append("  dry run: patch not sent" if self.dry_run else "  patch sent")
        else:
            lines.append("  nothing to change: no patch sent")
        lines += [f"note: {note}" for note in self.plan.notes]
        return "\n".join(lines)


def rollout(  # noqa: PLR0913 - the target, then the action's keyword-only options
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
