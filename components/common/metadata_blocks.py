"""The metadata blocks of a JPEG, PNG or WebP file, found by walking its container: no pixel is decoded.

JPEG: the marker segments up to the start of scan (APP1 EXIF and XMP, APP11 C2PA JUMBF). PNG: every chunk up to IEND
(tEXt / zTXt / iTXt, XMP as iTXt ``XML:com.adobe.xmp``, eXIf, caBX for C2PA). WebP: the RIFF chunks (EXIF, ``XMP ``,
C2PA). Every block is bounded by ``cap`` bytes (inflated text too); what cannot be read is a ``problem`` (part,
reason), never an exception.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field


@dataclass
class MetadataBlocks:
    """The metadata blocks of one file, found by walking its container (no pixel is decoded)."""

    mime: str | None = None
    exif: list[bytes] = field(default_factory=list)  # TIFF structures
    xmp: list[bytes] = field(default_factory=list)
    texts: dict[str, str | None] = field(default_factory=dict)  # PNG text keyword -> value (None: not readable)
    c2pa: bool = False
    problems: list[tuple[str, str]] = field(default_factory=list)  # (part, reason)


def find_blocks(data: bytes, cap: int) -> MetadataBlocks:
    parts = MetadataBlocks()
    try:
        if data[:3] == b"\xff\xd8\xff":
            parts.mime = "image/jpeg"
            _walk_jpeg(data, parts)
        elif data[:8] == b"\x89PNG\r\n\x1a\n":
            parts.mime = "image/png"
            _walk_png(data, parts, cap)
        elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            parts.mime = "image/webp"
            _walk_webp(data, parts)
    except (struct.error, IndexError, ValueError) as exc:  # the walkers check bounds; this is the last guard
        parts.problems.append(("container", f"{type(exc).__name__}: {exc}"))
    for part in ("exif", "xmp"):
        blocks = getattr(parts, part)
        parts.problems += [(part, f"{len(b)} bytes, over the {cap}-byte cap") for b in blocks if len(b) > cap]
        setattr(parts, part, [b for b in blocks if len(b) <= cap])
    return parts


def _walk_jpeg(data: bytes, parts: MetadataBlocks) -> None:
    """Marker segments up to the start of scan: APP1 (EXIF, XMP), APP11 (C2PA JUMBF)."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            parts.problems.append(("container", f"JPEG: no marker at byte {pos}"))
            return
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: the metadata is before
            return
        (length,) = struct.unpack_from(">H", data, pos + 2)
        segment = data[pos + 4 : pos + 2 + length]
        if length < 2 or len(segment) != length - 2:
            parts.problems.append(("container", f"JPEG: segment 0x{marker:02X} at byte {pos} runs past the file"))
            return
        if marker == 0xE1 and segment.startswith(b"Exif\x00\x00"):
            parts.exif.append(segment[6:])
        elif marker == 0xE1 and segment.startswith(b"http://ns.adobe.com/xap/1.0/\x00"):
            parts.xmp.append(segment[29:])
        elif marker == 0xEB and segment[:2] == b"JP":
            parts.c2pa = True
        pos += 2 + length


def _walk_png(data: bytes, parts: MetadataBlocks, cap: int) -> None:
    """Chunks up to IEND: tEXt / zTXt / iTXt (XMP travels as iTXt ``XML:com.adobe.xmp``), eXIf, caBX (C2PA)."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        start, end = pos + 8, pos + 8 + length
        if end + 4 > len(data):
            parts.problems.append(("container", f"PNG: chunk {kind!r} at byte {pos} runs past the file"))
            return
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            _png_text(kind, data[start:end], parts, cap)
        elif kind == b"eXIf":
            parts.exif.append(data[start:end])
        elif kind == b"caBX":
            parts.c2pa = True
        elif kind == b"IEND":
            return
        pos = end + 4


def _png_text(kind: bytes, data: bytes, parts: MetadataBlocks, cap: int) -> None:
    """One text chunk's data into ``parts.texts``; its value only within ``cap`` bytes (decompressed too)."""
    end = len(data)
    head = data[:80]
    null = head.find(b"\x00")
    if null < 1:
        parts.problems.append(("png_text", f"{kind.decode()} chunk without a keyword"))
        return
    keyword = head[:null].decode("latin-1")
    body_start = null + 1
    size = end - body_start
    value: str | None = None
    problem = None
    if kind == b"tEXt":
        if size > cap:
            problem = f"tEXt {keyword!r} holds {size} bytes, over the {cap}-byte cap"
        else:
            value = data[body_start:end].decode("latin-1")
    elif kind == b"zTXt":
        value, problem = _inflate(data[body_start + 1 : end], cap, keyword, "latin-1")
    else:
        value, problem = _itxt(data, body_start, end, cap, keyword)
    if problem:
        parts.problems.append(("png_text", problem))
    if keyword == "XML:com.adobe.xmp":
        if value is not None:
            parts.xmp.append(value.encode("utf-8"))
        return
    parts.texts[keyword] = value


def _itxt(data: bytes, start: int, end: int, cap: int, keyword: str) -> tuple[str | None, str | None]:
    """iTXt after its keyword: compression flag, method, language\0, translated keyword\0, then UTF-8 text."""
    compressed = data[start] if end > start else 0
    lang_end = data.find(b"\x00", start + 2, end)
    text_start = data.find(b"\x00", lang_end + 1, end) + 1 if lang_end >= 0 else 0
    if text_start <= 0:
        return None, f"iTXt {keyword!r} is malformed"
    if compressed:
        return _inflate(data[text_start:end], cap, keyword, "utf-8")
    if end - text_start > cap:
        return None, f"iTXt {keyword!r} holds {end - text_start} bytes, over the {cap}-byte cap"
    return data[text_start:end].decode("utf-8", "replace"), None


def _inflate(compressed: bytes, cap: int, keyword: str, encoding: str) -> tuple[str | None, str | None]:
    """zlib with an output bound: a zip bomb stops at ``cap`` bytes."""
    if len(compressed) > cap:
        return None, f"compressed text {keyword!r} holds {len(compressed)} bytes, over the {cap}-byte cap"
    try:
        inflater = zlib.decompressobj()
        out = inflater.decompress(compressed, cap + 1)
    except zlib.error as exc:
        return None, f"compressed text {keyword!r}: {exc}"
    if len(out) > cap:
        return None, f"compressed text {keyword!r} inflates past the {cap}-byte cap"
    return out.decode(encoding, "replace"), None


def _walk_webp(data: bytes, parts: MetadataBlocks) -> None:
    """RIFF chunks: EXIF, ``XMP ``, C2PA."""
    pos = 12
    while pos + 8 <= len(data):
        kind, length = struct.unpack_from("<4sI", data, pos)
        start, end = pos + 8, pos + 8 + length
        if end > len(data):
            parts.problems.append(("container", f"WebP: chunk {kind!r} at byte {pos} runs past the file"))
            return
        if kind == b"EXIF":
            body = data[start:end]
            parts.exif.append(body[6:] if body.startswith(b"Exif\x00\x00") else body)
        elif kind == b"XMP ":
            parts.xmp.append(data[start:end])
        elif kind == b"C2PA":
            parts.c2pa = True
        pos = end + (length & 1)
