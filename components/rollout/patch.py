"""JSON merge patches (RFC 7386) on Kubernetes objects as plain dicts: apply one, and list the fields it changes."""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Change:
    """One field a patch changes; ``None`` stands for absent."""

    path: str
    before: Any
    after: Any


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


def lookup(obj: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` (keys from the top) in nested dicts; None when any key is missing."""
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _path(keys: tuple[str, ...]) -> str:
    return "".join(f'["{k}"]' if "." in k or "/" in k else f".{k}" for k in keys).lstrip(".")


def changed_fields(obj: dict[str, Any], patch: dict[str, Any]) -> list[Change]:
    """Each leaf of ``patch`` whose value the patch changes, before and after (absent = None)."""
    after = merge_patch(obj, patch)
    changes: list[Change] = []

    def walk(node: dict[str, Any], keys: tuple[str, ...]) -> None:
        for key, value in node.items():
            here = (*keys, key)
            if isinstance(value, dict) and value:
                walk(value, here)
            elif lookup(obj, here) != lookup(after, here):
                changes.append(Change(_path(here), lookup(obj, here), lookup(after, here)))

    walk(patch, ())
    return changes
