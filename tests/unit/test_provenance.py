"""The provenance reader on real files: C2PA manifests signed here under a test CA, IPTC XMP, generator metadata
as the tools write it, camera EXIF, and hostile metadata that must never raise."""

import json
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from components.common.provenance import Provenance, ProvenanceReader, Signal
from components.common.settings import ProvenanceSettings, Settings
from tests.helpers.provenance_files import (
    A1111_PARAMETERS,
    exif_bytes,
    fixture_table,
    pixels,
    png_with_raw_chunk,
    png_with_text,
    save,
    signing_ca,
    xmp_packet,
)


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return fixture_table()


@pytest.fixture(scope="module")
def anchors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trust") / "anchors.pem"
    path.write_bytes(signing_ca().ca_pem)
    return path


# name -> (ai_declared, c2pa state without trust anchors, [(kind, declares, generator)], unreadable parts)
TABLE = {
    "c2pa_ai_jpeg": (True, "valid", [("c2pa", "ai", "DALL-E")], []),
    "c2pa_ai_png": (True, "valid", [("c2pa", "ai", "DALL-E")], []),
    "c2pa_composite_jpeg": (True, "valid", [("c2pa", "ai_edited", "Adobe Firefly")], []),
    "c2pa_capture_jpeg": (False, "valid", [("c2pa", "capture", "Leica M11-P")], []),
    "c2pa_tampered_jpeg": (True, "invalid", [("c2pa", "ai", "DALL-E")], []),
    "a1111_png": (True, "absent", [("generator_metadata", "ai", "Stable Diffusion web UI")], []),
    "a1111_jpeg_exif": (True, "absent", [("generator_metadata", "ai", "Stable Diffusion web UI")], []),
    "a1111_webp_exif": (True, "absent", [("generator_metadata", "ai", "Stable Diffusion web UI")], []),
    "comfyui_png": (True, "absent", [("generator_metadata", "ai", "ComfyUI")], []),
    "invokeai_png": (True, "absent", [("generator_metadata", "ai", "InvokeAI")], []),
    "novelai_png": (True, "absent", [("generator_metadata", "ai", "NovelAI")], []),
    "iptc_ai_jpeg": (True, "absent", [("iptc", "ai", None)], []),
    "iptc_ai_png": (True, "absent", [("iptc", "ai", None)], []),
    "iptc_capture_jpeg": (False, "absent", [("iptc", "capture", None)], []),
    "camera_exif_jpeg": (False, "absent", [("exif_software", "capture", "Canon EOS R5")], []),
    "unrelated_text_png": (False, "absent", [], []),
    "plain_jpeg": (False, "absent", [], []),
    "giant_text_png": (False, "absent", [], ["png_text"]),
    "truncated_jumbf_jpeg": (False, "unreadable", [], ["c2pa"]),
    "billion_laughs_jpeg": (False, "absent", [], ["xmp"]),
}


@pytest.mark.parametrize("name", TABLE)
def test_reader_table(files: dict[str, bytes], name: str) -> None:
    ai_declared, c2pa, signals, unreadable = TABLE[name]
    got = ProvenanceReader().read(files[name])
    assert got.ai_declared is ai_declared
    assert got.c2pa == c2pa
    assert [(s.kind, s.declares, s.generator) for s in got.signals] == signals
    assert list(got.unreadable) == unreadable


def test_every_fixture_is_in_the_table(files: dict[str, bytes]) -> None:
    assert set(files) == set(TABLE)


@pytest.mark.parametrize(
    ("name", "state"),
    [
        ("c2pa_ai_jpeg", "trusted"),
        ("c2pa_ai_png", "trusted"),
        ("c2pa_capture_jpeg", "trusted"),
        ("c2pa_tampered_jpeg", "invalid"),  # a trusted signer does not make changed bytes valid
    ],
)
def test_trust_anchors_make_a_valid_signature_trusted(files: dict[str, bytes], anchors: Path, name: str, state: str):
    assert ProvenanceReader(ProvenanceSettings(trust_anchors=anchors)).read(files[name]).c2pa == state


def test_the_c2pa_detail_says_what_was_signed_and_what_failed(files: dict[str, bytes]) -> None:
    (signal,) = ProvenanceReader().read(files["c2pa_tampered_jpeg"]).signals
    assert "c2pa.created" in signal.detail
    assert "trainedAlgorithmicMedia" in signal.detail
    assert "assertion.dataHash.mismatch" in signal.detail
    assert "signed by APD Test" in signal.detail


def test_trust_anchors_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, anchors: Path) -> None:
    monkeypatch.setenv("APD_PROVENANCE__TRUST_ANCHORS", str(anchors))
    assert Settings().provenance.trust_anchors == anchors


@pytest.mark.parametrize(
    ("chunks", "generator"),
    [
        ({"parameters": A1111_PARAMETERS.replace("v1.9.4", "f2.0.1v1.10.1")}, "Stable Diffusion WebUI Forge"),
        ({"parameters": json.dumps({"Version": "Fooocus v2.5.5"}), "fooocus_scheme": "fooocus"}, "Fooocus"),
        ({"parameters": A1111_PARAMETERS.replace("v1.9.4", "Fooocus v2.5.5")}, "Fooocus"),
        ({"prompt": "a red mug", "use_stable_diffusion_model": "sd-v1-4", "seed": "42"}, "Easy Diffusion"),
        ({"workflow": json.dumps({"nodes": []})}, "ComfyUI"),
        ({"Software": "Midjourney v6"}, "Midjourney"),
    ],
)  # fmt: skip
def test_generator_metadata_variants(chunks: dict[str, str], generator: str) -> None:
    got = ProvenanceReader().read(png_with_text(chunks))
    assert got.ai_declared
    assert got.generator == generator


@pytest.mark.parametrize(
    ("chunks", "declared"),
    [
        ({"prompt": "a red mug"}, False),  # a plain-text prompt key alone is no tool's signature
        ({"parameters": "shot on a tripod, f/8"}, False),
        ({"Software": "GIMP 2.10"}, False),
        ({"Comment": "Steps: 20, Sampler: Euler a"}, False),  # only the tools' own keys count
    ],
)
def test_ordinary_text_is_not_a_declaration(chunks: dict[str, str], declared: bool) -> None:
    assert ProvenanceReader().read(png_with_text(chunks)).ai_declared is declared


def test_xmp_creator_tool_and_webp_xmp() -> None:
    webp = save(pixels(), "WEBP", xmp=xmp_packet(creator_tool="Adobe Firefly Image 3"))
    (signal,) = ProvenanceReader().read(webp).signals
    assert (signal.kind, signal.declares, signal.generator) == ("exif_software", "ai", "Adobe Firefly")


def test_exif_software_naming_a_generator() -> None:
    jpeg = save(pixels(), "JPEG", exif=exif_bytes(software="DALL-E 3"))
    assert ProvenanceReader().read(jpeg).generator == "DALL-E"


@pytest.mark.parametrize("code", ["humanEdits", "algorithmicallyEnhanced", "screenCapture", "somethingNew"])
def test_other_source_types_declare_unknown(code: str) -> None:
    (signal,) = ProvenanceReader().read(save(pixels(), "JPEG", xmp=xmp_packet(code))).signals
    assert signal.declares == "unknown"


def test_a_zip_bomb_text_chunk_stops_at_the_cap() -> None:
    bomb = b"parameters\x00\x00" + zlib.compress(b"\0" * (64 * 1024 * 1024), 9)  # 64 MB inflated, ~64 KB stored
    reader = ProvenanceReader(ProvenanceSettings(max_text_bytes=1024 * 1024))
    assert reader.read(png_with_raw_chunk(b"zTXt", bomb)).unreadable == ("png_text",)


def test_a_giant_chunk_keyword_still_counts() -> None:
    """ComfyUI's keys are evidence even when the workflow is over the cap and its text is not read."""
    body = b"workflow\x00" + b"{" + b" " * (3 * 1024 * 1024)
    got = ProvenanceReader().read(png_with_raw_chunk(b"tEXt", body))
    assert got.generator == "ComfyUI"
    assert got.unreadable == ("png_text",)


def test_capture_claims_never_declare_ai_and_the_strongest_generator_wins() -> None:
    capture = Signal("exif_software", "capture", "Canon EOS R5", "EXIF Make/Model")
    edited = Signal("c2pa", "ai_edited", "Adobe Firefly", "c2pa.edited")
    made = Signal("generator_metadata", "ai", "ComfyUI", "PNG text")
    assert not Provenance(signals=(capture,)).ai_declared
    assert Provenance(signals=(capture, edited, made)).generator == "ComfyUI"
    document = json.loads(Provenance("valid", (edited,)).to_json())
    assert document == {
        "ai_declared": True,
        "c2pa": "valid",
        "signals": [{"kind": "c2pa", "declares": "ai_edited", "generator": "Adobe Firefly", "detail": "c2pa.edited"}],
        "unreadable": [],
    }


def test_the_reader_pickles_into_workers_after_use(files: dict[str, bytes], anchors: Path) -> None:
    reader = ProvenanceReader(ProvenanceSettings(trust_anchors=anchors))
    assert reader.read(files["c2pa_ai_jpeg"]).c2pa == "trusted"
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.read(files["c2pa_ai_jpeg"]).c2pa == "trusted"


def test_mutated_metadata_never_raises(files: dict[str, bytes]) -> None:
    """Byte flips and cuts anywhere in every fixture: the reader answers, whatever it finds."""
    rng = np.random.default_rng(7)
    reader = ProvenanceReader()
    for name, data in files.items():
        if len(data) > 2_000_000:
            continue
        for _ in range(15):
            broken = bytearray(data[: int(rng.integers(len(data) // 2, len(data) + 1))])
            for position in rng.integers(0, min(len(broken), 4096), size=8):
                broken[position] ^= int(rng.integers(1, 256))
            got = reader.read(bytes(broken))
            assert isinstance(got, Provenance), name


@pytest.mark.parametrize(
    "data", [b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n\x00\x00\x00", b"RIFF\x00\x00\x00\x00WEBP", b"GIF89a"]
)
def test_truncated_and_foreign_files_have_no_evidence(data: bytes) -> None:
    got = ProvenanceReader().read(data)
    assert not got.ai_declared
    assert got.c2pa == "absent"


def _nested_boxes(depth: int) -> bytes:
    box = b""
    for _ in range(depth):
        box = struct.pack(">I4s", len(box) + 8, b"jumb") + box
    return box


@pytest.mark.parametrize(
    "body",
    [
        np.random.default_rng(3).bytes(9 * 1024 * 1024),  # 9 MB of noise where the manifest store should be
        struct.pack(">I4s", 9 * 1024 * 1024, b"jumb") + b"\x00" * 64,  # a box that claims 9 MB and holds 64 bytes
        _nested_boxes(5000),  # boxes nested 5000 deep
    ],
    ids=["noise", "lying-length", "deep-nesting"],
)
def test_hostile_c2pa_stores_are_unreadable_not_errors(body: bytes) -> None:
    got = ProvenanceReader().read(png_with_raw_chunk(b"caBX", body))
    assert (got.c2pa, got.unreadable, got.ai_declared) == ("unreadable", ("c2pa",), False)
