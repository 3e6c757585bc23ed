"""Offline schema checks for the Kubernetes resources the project renders or patches.

No API server runs here, so resources are checked against the schemas an API server would use:

- built-in kinds (Deployment, Service, CronJob, Role ...) with ``kubernetes-validate`` in strict mode for
  Kubernetes ``KUBERNETES_VERSION`` (unknown fields fail, as ``kubectl apply --validate=strict`` does);
- custom resources of KServe (``serving.kserve.io``) and prometheus-operator (``monitoring.coreos.com``) with
  ``jsonschema``, against the ``openAPIV3Schema`` of the upstream CRDs, read where ``tests/deploy/get_schemas.py``
  finds them (``APD_SCHEMAS_DIR``, the offline ``../shared/schemas``, or the pinned downloads in ``.tools/schemas``).
  The CRDs are read in place, never copied into the repository.

``validate_resource(obj)`` raises ``InvalidResourceError`` (an ``AssertionError``) naming the resource and the
failing path; a kind that no schema describes is an error too, never a silent pass.
"""

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from kubernetes_validate import utils as kubernetes_validate

from tests.deploy import get_schemas

KUBERNETES_VERSION = "1.32"

# Top-level metadata: the CRDs declare it as a bare object; the API server checks it as ObjectMeta.
# The fields a manifest sets are typed here, the rest (managed by the server) are accepted as they are.
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "generateName": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
    },
}

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class InvalidResourceError(AssertionError):
    """A resource that its schema rejects, or whose kind no known schema describes."""


@dataclass(frozen=True)
class CrdFile:
    """Where the CRD of one custom kind lives, and the versions it serves."""

    group: str
    kind: str
    path: Path


def schemas_dir() -> Path:
    """The upstream schemas folder (see ``get_schemas``); none found is an error that says how to get them."""
    folder = get_schemas.schemas_dir()
    if folder is None:
        raise InvalidResourceError(f"no upstream schemas found: {get_schemas.HOW_TO_GET}")
    return folder


@cache
def _crd_index(crds_dir: Path) -> dict[tuple[str, str], CrdFile]:
    """(group, kind) -> CRD file, read from each file's header only (the schemas are loaded on first use)."""
    if not crds_dir.is_dir():
        raise InvalidResourceError(f"no CRD folder at {crds_dir}: {get_schemas.HOW_TO_GET}")
    index: dict[tuple[str, str], CrdFile] = {}
    for path in sorted(crds_dir.glob("*/*.yaml")):
        text = path.read_text()
        # controller-gen writes spec.versions last, so everything above it is a small, complete YAML document.
        head = re.split(r"(?m)^  versions:\s*$", text, maxsplit=1)[0]
        try:
            spec = yaml.load(head, Loader=_YAML_LOADER)["spec"]
            group, kind = spec["group"], spec["names"]["kind"]
        except (yaml.YAMLError, KeyError, TypeError):
            spec = yaml.load(text, Loader=_YAML_LOADER)["spec"]
            group, kind = spec["group"], spec["names"]["kind"]
        index[(group, kind)] = CrdFile(group, kind, path)
    return index


def _is_bare_object(node: dict[str, Any]) -> bool:
    return node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node


def crd_to_json_schema(node: Any, key: str = "") -> Any:
    """One structural OpenAPI v3 schema node -> JSON Schema that rejects what strict field validation rejects.

    ``x-kubernetes-*`` extensions are dropped; ``nullable`` admits null; ``x-kubernetes-int-or-string`` admits an
    integer or a string; objects reject unknown fields unless ``x-kubernetes-preserve-unknown-fields`` is set;
    a bare embedded ``metadata`` object (ObjectMeta inside a template) is accepted as any object.
    """
    if isinstance(node, list):
        return [crd_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for name, value in node.items():
        if name.startswith("x-kubernetes-") or name == "nullable":
            continue
        if name == "properties":
            out[name] = {prop: crd_to_json_schema(schema, prop) for prop, schema in value.items()}
        elif name in ("items", "additionalProperties", "not", "anyOf", "allOf", "oneOf"):
            out[name] = crd_to_json_schema(value)
        else:
            out[name] = value
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    preserve = bool(node.get("x-kubernetes-preserve-unknown-fields"))
    embedded_metadata = key == "metadata" and _is_bare_object(node)
    if out.get("type") == "object" and not preserve and not embedded_metadata and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if node.get("nullable"):
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "apd" / "crd-json-schemas"


def _converted_schemas(crd_path: Path) -> dict[str, dict[str, Any]]:
    """Served version -> converted JSON Schema, cached on disk by the CRD file's hash (YAML parsing is slow)."""
    text = crd_path.read_bytes()
    cached = _cache_dir() / f"{crd_path.stem}-{hashlib.sha256(text).hexdigest()[:16]}.json"
    if cached.is_file():
        return dict(json.loads(cached.read_text()))
    crd = yaml.load(text, Loader=_YAML_LOADER)
    schemas = {
        v["name"]: crd_to_json_schema(v["schema"]["openAPIV3Schema"])
        for v in crd["spec"]["versions"]
        if v.get("served", True)
    }
    try:  # a cache that cannot be written only costs time
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=cached.parent, suffix=".tmp", delete=False) as tmp:
            json.dump(schemas, tmp)
        Path(tmp.name).replace(cached)
    except OSError:
        pass
    return schemas


@cache
def _crd_validator(crds_dir: Path, group: str, kind: str, version: str) -> jsonschema.Draft202012Validator:
    """The converted schema of one served CRD version, compiled once per process."""
    crd_file = _crd_index(crds_dir)[(group, kind)]
    versions = _converted_schemas(crd_file.path)
    if version not in versions:
        raise InvalidResourceError(
            f"{group}/{version} {kind}: {crd_file.path.name} serves only {', '.join(sorted(versions))}"
        )
    schema = versions[version]
    schema["properties"]["metadata"] = OBJECT_META_SCHEMA
    # Every object has them, checked by the API server itself; Istio's CRDs declare only spec and status.
    schema["properties"].setdefault("apiVersion", {"type": "string"})
    schema["properties"].setdefault("kind", {"type": "string"})
    return jsonschema.Draft202012Validator(schema)


def _path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "(root)"


def _describe(obj: dict[str, Any]) -> str:
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    return f"{obj.get('apiVersion', '?')} {obj.get('kind', '?')} {metadata.get('name', '?')!s}"


def _validate_custom(obj: dict[str, Any], crds_dir: Path, group: str, version: str) -> None:
    validator = _crd_validator(crds_dir, group, obj["kind"], version)
    errors = sorted(validator.iter_errors(obj), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        lines = [f"{_path(e.absolute_path)}: {e.message}" for e in errors[:10]]
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise InvalidResourceError(f"{_describe(obj)} fails its CRD schema:\n  " + "\n  ".join(lines) + more)


def _validate_builtin(obj: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        raise InvalidResourceError(
            f"{_describe(obj)} fails the Kubernetes {KUBERNETES_VERSION} schema (strict): "
            f"{_path(exc.path)}: {exc.message}"
        ) from None
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise InvalidResourceError(
            f"{_describe(obj)}: unknown kind, no built-in Kubernetes {KUBERNETES_VERSION} schema and no CRD in "
            f"{schemas_dir() / 'crds'} describes it ({exc.message})"
        ) from None


def validate_resource(obj: dict[str, Any]) -> None:
    """Check one resource against its schema; raise ``InvalidResourceError`` naming it and the failing path."""
    if not isinstance(obj, dict):
        raise InvalidResourceError(f"a resource must be a mapping, got {type(obj).__name__}")
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str) or not api_version or not kind:
        raise InvalidResourceError(f"{_describe(obj)}: apiVersion and kind must both be non-empty strings")
    group, _, version = api_version.rpartition("/")
    crds_dir = schemas_dir() / "crds"
    if group and any(known_group == group for known_group, _ in _crd_index(crds_dir)):
        if (group, kind) not in _crd_index(crds_dir):
            known = sorted(k for g, k in _crd_index(crds_dir) if g == group)
            raise InvalidResourceError(f"{_describe(obj)}: unknown kind in {group} (known: {', '.join(known)})")
        _validate_custom(obj, crds_dir, group, version)
    else:
        _validate_builtin(obj)


def validate_resources(objs: Iterable[dict[str, Any]]) -> int:
    """Check every resource; raise one ``InvalidResourceError`` listing all failures. Returns how many passed."""
    failures, passed = [], 0
    for obj in objs:
        try:
            validate_resource(obj)
            passed += 1
        except InvalidResourceError as exc:
            failures.append(str(exc))
    if failures:
        raise InvalidResourceError("\n".join(failures))
    return passed
