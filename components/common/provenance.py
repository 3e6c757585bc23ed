"""Provenance evidence: what an image file declares about its own origin, read without decoding a pixel.

Sources, strongest first:
- C2PA Content Credentials (JUMBF in JPEG APP11, the PNG ``caBX`` chunk, the WebP ``C2PA`` chunk), validated by
  ``c2pa-python`` offline: no remote manifest fetch, no OCSP, trust anchors only from a PEM file. Every manifest
  of the store counts (an edit of a generated image keeps the generation in its parent's manifest).
- IPTC ``DigitalSourceType`` in XMP (``Iptc4xmpExt``), the tag Google Merchant Center asks sellers to keep.
- Generator metadata that local tools write into the file: PNG text chunks and EXIF ``UserComment``
  (Stable Diffusion web UI / Forge ``parameters``, ComfyUI ``prompt``/``workflow``, InvokeAI, Fooocus, NovelAI,
  Easy Diffusion).
- EXIF / XMP / PNG ``Software`` naming a generator, and a camera's EXIF ``Make``/``Model`` (a capture claim).

Every claim is unsigned or easily stripped: its absence proves nothing. An AI claim (``ai`` or ``ai_edited``)
makes ``ai_declared`` true, also from an *invalid* C2PA manifest: a forged or damaged claim of AI origin only
works against whoever uploads the image, and the usual cause of ``invalid`` is an edit after signing, which
does not make generated pixels real. Capture claims are reported and never decide anything.

Hostile metadata (truncated JUMBF, giant text chunks, zip and XML bombs) never raises: the part that could not
be read is named in ``unreadable`` and the reason is logged; every read is bounded by ``max_text_bytes``.
"""

from __future__ import annotations

import io
import json
import re
import warnings
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import ParseError

import c2pa
import structlog
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from PIL import Image

from components.common.metadata_blocks import find_blocks
from components.common.settings import ProvenanceSettings

# Pillow's TIFF parser warns of corrupt EXIF blocks ("Corrupt EXIF data ..."); a broken block reads as what it
# holds, and what cannot be read is reported in ``unreadable``. Installed once (see components.common.images).
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")

log = structlog.get_logger(__name__)

KINDS = ("c2pa", "iptc", "generator_metadata", "exif_software")
AI_DECLARATIONS = ("ai", "ai_edited")  # what makes ai_declared true
C2PA_STATES = ("absent", "valid", "trusted", "invalid", "unreadable")

# IPTC NewsCodes digital source types (http://cv.iptc.org/newscodes/digitalsourcetype/): what each declares.
# Not listed (humanEdits, algorithmicallyEnhanced, digitalCreation, screenCapture, ...): "unknown".
SOURCE_TYPES = {
    "trainedAlgorithmicMedia": "ai",
    "compositeSynthetic": "ai",
    "algorithmicMedia": "ai",
    "compositeWithTrainedAlgorithmicMedia": "ai_edited",
    "digitalCapture": "capture",
    "computationalCapture": "capture",
    "compositeCapture": "capture",
    "negativeFilm": "capture",
    "positiveFilm": "capture",
    "print": "capture",
}
_STRENGTH = {"ai": 3, "ai_edited": 2, "capture": 1, "unknown": 0}

# Software names (lower case, matched as substrings) that only generators write.
AI_SOFTWARE = {
    "midjourney": "Midjourney",
    "dall-e": "DALL-E",
    "dall·e": "DALL-E",
    "chatgpt": "ChatGPT",
    "openai": "OpenAI",
    "firefly": "Adobe Firefly",
    "imagen": "Google Imagen",
    "gemini": "Google Gemini",
    "stable diffusion": "Stable Diffusion",
    "stablediffusion": "Stable Diffusion",
    "novelai": "NovelAI",
    "comfyui": "ComfyUI",
    "invokeai": "InvokeAI",
    "fooocus": "Fooocus",
    "easy diffusion": "Easy Diffusion",
    "leonardo.ai": "Leonardo.Ai",
    "ideogram": "Ideogram",
    "bing image creator": "Bing Image Creator",
}

_XMP_NS = {
    "iptc": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "tiff": "http://ns.adobe.com/tiff/1.0/",
}
_A1111 = re.compile(r"(^|\n)Steps: \d+, Sampler: ")
_EXIF_IFD, _SOFTWARE, _MAKE, _MODEL, _DESCRIPTION, _USER_COMMENT = 0x8769, 0x0131, 0x010F, 0x0110, 0x010E, 0x9286


@dataclass(frozen=True)
class Signal:
    """One declaration found in the file."""

    kind: str  # c2pa | iptc | generator_metadata | exif_software
    declares: str  # ai | ai_edited | capture | unknown
    generator: str | None  # the tool, camera or signer it names, if any
    detail: str  # what was read, in a few words

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "declares": self.declares, "generator": self.generator, "detail": self.detail}


@dataclass(frozen=True)
class Provenance:
    """What a file declares about its origin. ``unreadable`` names the parts (c2pa, xmp, exif, png_text, container)
    that were there but could not be read; the reasons are in the log."""

    c2pa: str = "absent"  # absent | valid | trusted | invalid | unreadable
    signals: tuple[Signal, ...] = ()
    unreadable: tuple[str, ...] = ()

    @property
    def ai_declared(self) -> bool:
        return any(s.declares in AI_DECLARATIONS for s in self.signals)

    @property
    def generator(self) -> str | None:
        """The generator named by the strongest AI declaration (None without one)."""
        ai = [s for s in self.signals if s.declares in AI_DECLARATIONS and s.generator]
        return max(ai, key=lambda s: _STRENGTH[s.declares]).generator if ai else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ai_declared": self.ai_declared,
            "c2pa": self.c2pa,
            "signals": [s.to_dict() for s in self.signals],
            "unreadable": list(self.unreadable),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> Provenance:
        """Back from ``to_dict`` (a client reading an answer); fields it lacks are left empty."""
        signals = tuple(
            Signal(str(s.get("kind")), str(s.get("declares")), s.get("generator"), str(s.get("detail", "")))
            for s in document.get("signals") or []
            if isinstance(s, dict)
        )
        return cls(str(document.get("c2pa", "absent")), signals, tuple(document.get("unreadable") or ()))


class ProvenanceReader:
    """Image bytes -> ``Provenance``. Build one per process; the C2PA context (with the trust anchors) is made on
    first use, so the reader can be pickled into server workers before it is used."""

    def __init__(self, settings: ProvenanceSettings | None = None) -> None:
        settings = settings or ProvenanceSettings()
        self.anchors = settings.trust_anchors.read_text() if settings.trust_anchors else None
        self.max_text_bytes = settings.max_text_bytes
        self._context: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_context": None}

    def read(self, data: bytes) -> Provenance:
        """The evidence of one file; never raises for anything the file holds."""
        try:
            return self._read(data)
        except Exception:  # a reader bug must not fail the request: the pixels still answer
            log.exception("provenance_reader_failed", bytes=len(data))
            return Provenance(unreadable=("reader",))

    def _read(self, data: bytes) -> Provenance:
        parts = find_blocks(data, self.max_text_bytes)
        signals: list[Signal] = []
        state = "absent"
        if parts.c2pa and parts.mime:
            state, found, problem = self._c2pa(data, parts.mime)
            signals += found
            parts.problems += [("c2pa", problem)] if problem else []
        for part, blocks, parse in (("xmp", parts.xmp, _xmp_signals), ("exif", parts.exif, _exif_signals)):
            for block in blocks:
                found, problem = parse(block)
                signals += found
                parts.problems += [(part, problem)] if problem else []
        signals += _text_signals(parts.texts)
        for part, reason in parts.problems:
            log.info("provenance_unreadable", part=part, reason=reason)
        unreadable = tuple(dict.fromkeys(part for part, _ in parts.problems))
        return Provenance(state, tuple(dict.fromkeys(signals)), unreadable)

    def _c2pa(self, data: bytes, mime: str) -> tuple[str, list[Signal], str | None]:
        try:
            if self._context is None:
                config: dict[str, Any] = {
                    "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False, "verify_trust": True},
                    "core": {"allowed_network_hosts": []},
                }
                if self.anchors:
                    config["trust"] = {"trust_anchors": self.anchors}
                self._context = c2pa.Context.from_dict(config)
            reader = c2pa.Reader.try_create(mime, io.BytesIO(data), None, self._context)
            if reader is None:
                return "unreadable", [], "JUMBF present but no C2PA manifest store found"
            with reader:
                state = (reader.get_validation_state() or "invalid").lower()
                store = json.loads(reader.json())
        except (c2pa.C2paError, ValueError, OSError) as exc:
            return "unreadable", [], f"{type(exc).__name__}: {exc}"[:300]
        if state not in ("valid", "trusted", "invalid"):
            state = "invalid"
        return state, [_c2pa_signal(store, state)], None


def _c2pa_signal(store: dict[str, Any], state: str) -> Signal:
    """The strongest declaration among the actions of every manifest in the store."""
    manifests = store.get("manifests") or {}
    active = manifests.get(store.get("active_manifest")) or {}
    best: tuple[int, str, str | None, str] = (-1, "unknown", None, "no digitalSourceType")
    for manifest in manifests.values():
        for assertion in manifest.get("assertions") or []:
            if not str(assertion.get("label", "")).startswith("c2pa.actions"):
                continue
            for action in (assertion.get("data") or {}).get("actions") or []:
                source = str(action.get("digitalSourceType") or "").rsplit("/", 1)[-1]
                declares = SOURCE_TYPES.get(source, "unknown")
                agent = action.get("softwareAgent")
                agent_name = agent.get("name") if isinstance(agent, dict) else agent
                detail = ", ".join(
                    x for x in (action.get("action"), source, agent_name and f"softwareAgent {agent_name}") if x
                )
                if source and _STRENGTH[declares] > best[0]:
                    best = (_STRENGTH[declares], declares, agent_name, detail)
    generators = active.get("claim_generator_info") or [{}]
    signer = (active.get("signature_info") or {}).get("issuer")
    _, declares, generator, detail = best
    generator = generator or generators[0].get("name") or active.get("claim_generator")
    failures = [
        r.get("code")
        for r in ((store.get("validation_results") or {}).get("activeManifest") or {}).get("failure") or []
    ]
    detail += f"; {state}" + (f" ({', '.join(map(str, failures[:3]))})" if failures else "")
    if signer:
        detail += f"; signed by {signer}"
    return Signal("c2pa", declares, str(generator) if generator else None, detail)


def _software_signal(kind: str, software: str, where: str) -> Signal | None:
    lowered = software.lower()
    name = next((n for key, n in AI_SOFTWARE.items() if key in lowered), None)
    return Signal(kind, "ai", name, f"{where} {software[:80]}") if name else None


def _xmp_signals(packet: bytes) -> tuple[list[Signal], str | None]:
    try:
        text = packet.decode("utf-8", "replace").strip("\x00 \r\n\t")
        root = fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        return [], f"XMP packet: {type(exc).__name__}: {exc}"[:300]
    signals = []
    iptc, xmp, rdf = (f"{{{_XMP_NS[k]}}}" for k in ("iptc", "xmp", "rdf"))
    for element in root.iter():
        values = [element.attrib.get(f"{iptc}DigitalSourceType")]
        if element.tag == f"{iptc}DigitalSourceType":
            values += [element.text, element.attrib.get(f"{rdf}resource")]
        for value in filter(None, values):
            code = value.strip().rsplit("/", 1)[-1]
            declares = SOURCE_TYPES.get(code, "unknown")
            signals.append(Signal("iptc", declares, None, f"Iptc4xmpExt:DigitalSourceType {code}"))
        tool = element.attrib.get(f"{xmp}CreatorTool") or (element.text if element.tag == f"{xmp}CreatorTool" else None)
        if tool and (signal := _software_signal("exif_software", tool, "xmp:CreatorTool")):
            signals.append(signal)
    return signals, None


def _exif_signals(tiff: bytes) -> tuple[list[Signal], str | None]:
    try:
        exif = Image.Exif()
        exif.load(tiff)
        sub = exif.get_ifd(_EXIF_IFD)
        software, make, model = (_ascii(exif.get(t)) for t in (_SOFTWARE, _MAKE, _MODEL))
        comment = _user_comment(sub.get(_USER_COMMENT))
        description = _ascii(exif.get(_DESCRIPTION))
    except Exception as exc:  # Pillow's TIFF parser raises many types on hostile input
        return [], f"EXIF: {type(exc).__name__}: {exc}"[:300]
    signals = []
    for where, text in (("EXIF UserComment", comment), ("EXIF ImageDescription", description)):
        if text and (tool := _generator_of_parameters(text)):
            signals.append(Signal("generator_metadata", "ai", tool, f"{where}: generation parameters"))
    if software and (signal := _software_signal("exif_software", software, "EXIF Software")):
        signals.append(signal)
    elif make or model:
        camera = model if make and model and model.startswith(make) else " ".join(x for x in (make, model) if x)
        detail = "EXIF Make/Model" + (f", Software {software[:40]}" if software else "")
        signals.append(Signal("exif_software", "capture", camera[:80], detail))
    return signals, None


def _ascii(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value.strip("\x00 ").strip() or None if isinstance(value, str) else None


def _user_comment(value: Any) -> str | None:
    """EXIF UserComment: an 8-byte charset prefix (ASCII, UNICODE = UTF-16, JIS or undefined), then the text."""
    if isinstance(value, str):
        return value or None
    if not isinstance(value, bytes) or len(value) < 8:
        return None
    prefix, body = value[:8], value[8:]
    if prefix.startswith(b"UNICODE"):
        # Writers disagree on the byte order: the one without NULs in the first ASCII-heavy half wins.
        big = body.decode("utf-16-be", "replace")
        little = body.decode("utf-16-le", "replace")
        return little if little.count("\ufffd") + _non_ascii(little) < big.count("\ufffd") + _non_ascii(big) else big
    return body.decode("utf-8", "replace").strip("\x00 ") or None


def _non_ascii(text: str) -> int:
    return sum(1 for ch in text[:200] if ord(ch) > 0x7F)


def _generator_of_parameters(text: str) -> str | None:
    """The tool behind a generation-parameters text (A1111-style lines, or Fooocus / ComfyUI JSON)."""
    if _A1111.search(text):
        version = re.search(r"Version: (\S+)", text)
        if version and "fooocus" in version.group(1).lower():
            return "Fooocus"
        if version and version.group(1).startswith("f"):
            return "Stable Diffusion WebUI Forge"
        return "Stable Diffusion web UI"
    head = text.lstrip()[:2000].lower()
    if head.startswith("{"):
        if "fooocus" in head:
            return "Fooocus"
        if '"class_type"' in head:
            return "ComfyUI"
    return None


def _text_signals(texts: dict[str, str | None]) -> list[Signal]:
    """Generator metadata in PNG text chunks; a keyword alone can be enough when its value was too big to read."""
    keys = {k.lower(): k for k in texts}
    value = {k.lower(): v or "" for k, v in texts.items()}
    signals = []

    def found(generator: str, detail: str) -> None:
        signals.append(Signal("generator_metadata", "ai", generator, detail))

    if "invokeai_metadata" in keys or "invokeai_graph" in keys or "sd-metadata" in keys or "dream" in keys:
        found("InvokeAI", "PNG text " + ", ".join(keys[k] for k in keys if k.startswith(("invokeai", "sd-", "dream"))))
    if "workflow" in keys or ("prompt" in keys and value["prompt"].lstrip().startswith("{")):
        found("ComfyUI", "PNG text " + ", ".join(keys[k] for k in ("prompt", "workflow") if k in keys))
    if "fooocus_scheme" in keys:
        found("Fooocus", "PNG text fooocus_scheme, parameters")
    elif "parameters" in keys and (tool := _generator_of_parameters(value["parameters"])):
        found(tool, "PNG text parameters: generation parameters")
    if value.get("software", "").strip().lower() == "novelai":
        found("NovelAI", "PNG text Software NovelAI" + (", Comment" if "comment" in keys else ""))
    elif "use_stable_diffusion_model" in keys or any(v.lower().startswith("easy diffusion") for v in value.values()):
        found("Easy Diffusion", "PNG text use_stable_diffusion_model")
    elif "software" in keys and (signal := _software_signal("exif_software", value["software"], "PNG Software")):
        signals.append(signal)
    return signals
