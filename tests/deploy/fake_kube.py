"""A fake of the Kubernetes CustomObjectsApi for InferenceServices (no API server can run on these machines)."""

import copy
import json
from typing import Any

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
