"""Real image files that declare their origin, made here: C2PA Content Credentials signed with ``c2pa-python``
under a test CA made with ``cryptography``, IPTC XMP, generator metadata as the tools write it, camera EXIF, and
hostile metadata. Used by the reader's table tests, the serving, predict and UI integration tests and
``make bench-serving``."""

from __future__ import annotations

import datetime
import functools
import io
import json
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image, PngImagePlugin

from tests.helpers.images import png_chunk

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
A1111_PARAMETERS = (
    "a leather handbag on a white table, studio light\nNegative prompt: blurry\n"
    "Steps: 25, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234, Size: 768x768, Model hash: 6ce0161689, "
    "Model: v1-5-pruned-emaonly, Version: v1.9.4"
)
CAPTURED = ("c2pa.created", "digitalCapture", "Leica M11-P")
FILLED = ("c2pa.edited", "compositeWithTrainedAlgorithmicMedia", "Adobe Firefly")  # generative fill
COMFY_PROMPT = {"3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20}}}
COMFY_WORKFLOW = {"last_node_id": 9, "nodes": [{"id": 3, "type": "KSampler"}]}


def pixels(size: tuple[int, int] = (320, 240), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


def save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


@dataclass(frozen=True)
class SigningCA:
    """A CA certificate (PEM) and a signer chain (end-entity + CA) with its ES256 key."""

    ca_pem: bytes
    chain_pem: bytes
    key_pem: bytes


@functools.cache
def signing_ca() -> SigningCA:
    """ES256 CA and an end-entity certificate with the emailProtection EKU that C2PA accepts for signing."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, common), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "APD Test")]
        )

    def usage(sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=sign, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=not sign, crl_sign=not sign, encipher_only=False, decipher_only=False,
        )  # fmt: skip

    ca_key, ee_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def certificate(
        subject: str, key: ec.EllipticCurvePublicKey, days: int, *extra: x509.ExtensionType
    ) -> x509.Certificate:
        """Issued by the CA (a CA certificate when ``subject`` is the CA): ``extra`` are non-critical extensions."""
        is_ca = subject == "APD Test CA"
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name("APD Test CA"))
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
            .add_extension(usage(sign=not is_ca), critical=True)
        )
        for extension in extra:
            builder = builder.add_extension(extension, critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    ca_public = ca_key.public_key()
    ca = certificate("APD Test CA", ca_public, 3650, x509.SubjectKeyIdentifier.from_public_key(ca_public))
    ee = certificate(
        "APD Test Signer",
        ee_key.public_key(),
        365,
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
        x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public),
    )

    def pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    key = ee_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SigningCA(pem(ca), pem(ee) + pem(ca), key)


def c2pa_signed(image: bytes, mime: str, *actions: tuple[str, str, str]) -> bytes:
    """``image`` with an embedded manifest of ``actions``: (action, IPTC digital source type, software agent)."""
    import c2pa

    ca = signing_ca()
    manifest = {
        "claim_generator_info": [{"name": "apd-tests", "version": "1.0"}],
        "title": "product",
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {"action": action, "digitalSourceType": IPTC + source, "softwareAgent": {"name": agent}}
                        for action, source, agent in actions
                    ]
                },
            }
        ],
    }
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", ca.chain_pem, ca.key_pem, None))
    out = io.BytesIO()
    with c2pa.Builder(manifest) as builder:
        builder.sign(signer, mime, io.BytesIO(image), out)
    return out.getvalue()


def tampered(signed_jpeg: bytes) -> bytes:
    """A signed JPEG with one byte of its entropy-coded data changed after signing: the hash no longer matches."""
    data = bytearray(signed_jpeg)
    data[-200] ^= 0x55
    return bytes(data)


def xmp_packet(source_type: str | None = None, creator_tool: str | None = None, extra: str = "") -> bytes:
    attrs = ""
    if source_type:
        attrs += f' Iptc4xmpExt:DigitalSourceType="{IPTC}{source_type}"'
    if creator_tool:
        attrs += f' xmp:CreatorTool="{creator_tool}"'
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        f'xmlns:xmp="http://ns.adobe.com/xap/1.0/"{attrs}>{extra}</rdf:Description></rdf:RDF></x:xmpmeta>'
        '<?xpacket end="w"?>'
    ).encode()


BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'.encode() for i in range(1, 10)
    )
    + b']><x:xmpmeta xmlns:x="adobe:ns:meta/">&lol9;</x:xmpmeta>'
)


def exif_bytes(**tags: object) -> bytes:
    """EXIF from tag names: software, make, model, description (IFD0) and user_comment (raw bytes, Exif IFD)."""
    exif = Image.Exif()
    ids = {"software": 0x0131, "make": 0x010F, "model": 0x0110, "description": 0x010E}
    for key, tag in ids.items():
        if key in tags:
            exif[tag] = tags[key]
    if "user_comment" in tags:
        exif.get_ifd(0x8769)[0x9286] = tags["user_comment"]
    return exif.tobytes()


def unicode_comment(text: str) -> bytes:
    """EXIF UserComment as A1111 writes it (piexif): the UNICODE prefix, then UTF-16 big-endian."""
    return b"UNICODE\x00" + text.encode("utf-16-be")


def png_with_text(chunks: dict[str, str], image: Image.Image | None = None, compressed: bool = False) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        if compressed:
            info.add_itxt(key, value, zip=True)
        else:
            info.add_text(key, value)
    return save(image or pixels(), "PNG", pnginfo=info)


def png_with_raw_chunk(kind: bytes, body: bytes) -> bytes:
    """A valid PNG with one extra chunk written before IEND, whatever its size or content."""
    png = save(pixels(), "PNG")
    return png[:-12] + png_chunk(kind, body) + png[-12:]


def truncated_jumbf(signed_jpeg: bytes) -> bytes:
    """A signed JPEG whose first APP11 segment (the start of the C2PA JUMBF box) is cut to half its length."""
    pos = 2
    while signed_jpeg[pos + 1] != 0xEB:
        pos += 2 + struct.unpack_from(">H", signed_jpeg, pos + 2)[0]
    (length,) = struct.unpack_from(">H", signed_jpeg, pos + 2)
    half = signed_jpeg[pos + 4 : pos + 4 + (length - 2) // 2]
    return signed_jpeg[:pos] + b"\xff\xeb" + struct.pack(">H", len(half) + 2) + half + signed_jpeg[pos + 2 + length :]


def fixture_table() -> dict[str, bytes]:
    """Every named fixture (the C2PA ones need ``c2pa`` and take ~50 ms each to sign)."""
    jpeg, png = save(pixels(), "JPEG", quality=90), save(pixels(), "PNG")
    generated = ("c2pa.created", "trainedAlgorithmicMedia", "DALL-E")
    return {
        "c2pa_ai_jpeg": c2pa_signed(jpeg, "image/jpeg", generated),
        "c2pa_ai_png": c2pa_signed(png, "image/png", generated),
        "c2pa_composite_jpeg": c2pa_signed(jpeg, "image/jpeg", CAPTURED, FILLED),
        "c2pa_capture_jpeg": c2pa_signed(jpeg, "image/jpeg", CAPTURED),
        "c2pa_tampered_jpeg": tampered(c2pa_signed(jpeg, "image/jpeg", generated)),
        "a1111_png": png_with_text({"parameters": A1111_PARAMETERS}),
        "a1111_jpeg_exif": save(pixels(), "JPEG", exif=exif_bytes(user_comment=unicode_comment(A1111_PARAMETERS))),
        "a1111_webp_exif": save(pixels(), "WEBP", exif=exif_bytes(user_comment=unicode_comment(A1111_PARAMETERS))),
        "comfyui_png": png_with_text({"prompt": json.dumps(COMFY_PROMPT), "workflow": json.dumps(COMFY_WORKFLOW)}),
        "invokeai_png": png_with_text({"invokeai_metadata": json.dumps({"app_version": "4.2.0", "steps": 30})}),
        "novelai_png": png_with_text({"Software": "NovelAI", "Comment": json.dumps({"steps": 28})}),
        "iptc_ai_jpeg": save(pixels(), "JPEG", xmp=xmp_packet("trainedAlgorithmicMedia")),
        "iptc_ai_png": png_with_text(
            {"XML:com.adobe.xmp": xmp_packet("trainedAlgorithmicMedia").decode()}, compressed=True
        ),
        "iptc_capture_jpeg": save(pixels(), "JPEG", xmp=xmp_packet("digitalCapture")),
        "camera_exif_jpeg": save(
            pixels(), "JPEG", exif=exif_bytes(make="Canon", model="Canon EOS R5", software="1.8.1")
        ),
        "unrelated_text_png": png_with_text({"Title": "Blue mug", "Author": "Shop 42"}),
        "plain_jpeg": jpeg,
        "giant_text_png": png_with_raw_chunk(b"tEXt", b"parameters\x00" + b"a" * (9 * 1024 * 1024)),
        "truncated_jumbf_jpeg": truncated_jumbf(c2pa_signed(jpeg, "image/jpeg", generated)),
        "billion_laughs_jpeg": save(pixels(), "JPEG", xmp=BILLION_LAUGHS),
    }
