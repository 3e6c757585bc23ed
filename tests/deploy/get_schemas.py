"""Get the upstream schemas the deployment tests validate against: pinned URLs, pinned SHA-256, offline first.

The tests check the chart, the manifests, the rollout patches and the dashboard against the CRDs of KServe,
prometheus-operator, Kubeflow Trainer, the Training Operator and Istio, and against Grafana 11.6's dashboard JSON
schemas. They are upstream data, never copied into this repository. Where they are found, in this order:

1. ``$APD_SCHEMAS_DIR`` when set;
2. the workplace's offline copy, ``shared/schemas`` next to the checkout (or ``/work/shared/schemas``);
3. ``.tools/schemas`` in the checkout, filled by this script from the upstream commits pinned in ``SOURCES``:
   every download is checked against its pinned SHA-256 before it is written, so a moved tag or a changed file
   fails loudly. Istio's security CRDs are cut out of the generated multi-document file they are published in.

    python -m tests.deploy.get_schemas          # prints the folder the tests will use; downloads what is missing
    python -m tests.deploy.get_schemas --dest D # download into D instead of .tools/schemas

``make schemas`` runs it, and ``make test`` runs ``make schemas`` first. Idempotent: nothing is downloaded when an
offline copy exists or the files are already there with their pinned digests.
"""

import argparse
import hashlib
import os
import re
import sys
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCHEMAS_ENV = "APD_SCHEMAS_DIR"
# The offline copies: next to the checkout (tests/deploy/get_schemas.py -> the repository's parent holds
# shared/schemas), else the workplace's shared folder (a clone elsewhere, e.g. CI's).
OFFLINE = (REPO.parent / "shared" / "schemas", Path("/work/shared/schemas"))
DOWNLOADED = REPO / ".tools" / "schemas"

_GITHUB = "https://raw.githubusercontent.com"
_KSERVE = f"{_GITHUB}/kserve/kserve/1fb781055dd1567164358233e1125142ca6ef1fe/config/crd/full"  # tag v0.20.0
_PROM = f"{_GITHUB}/prometheus-operator/prometheus-operator/f8fafd475f3d132e239432ae6172de60a6cb6516"  # v0.93.0
_TRAINER = f"{_GITHUB}/kubeflow/trainer/658725bdae5c7e3a0854d93ac6ff492e109a22ab/manifests/base/crds"  # v2.3.0
_OPERATOR = f"{_GITHUB}/kubeflow/trainer/4445c12aa62e4345b0c2c6ac9b215a70eca46ed7/manifests/base/crds"  # v1.9.4
_ISTIO = f"{_GITHUB}/istio/api/b8f8791d9653b2edc77a071d48887e582cfe84bf/kubernetes/customresourcedefinitions.gen.yaml"
_ISTIO_SHA256 = "c98c49e3435f7ca04938cc710f929bbfe952472b177c3a7384b31e383c6b6c7a"
_GRAFANA = f"{_GITHUB}/grafana/grafana-foundation-sdk/aba721fdefde7979d14dbd551a6ea0d4ed14599f/jsonschema"  # 11.6.x


@dataclass(frozen=True)
class Source:
    """One schema file: where it goes under the schemas folder, the URL it comes from and that URL's SHA-256.

    ``document`` names the CustomResourceDefinition to cut out when the URL is a multi-document file.
    """

    path: str
    url: str
    sha256: str
    document: str | None = None


SOURCES = (
    *(
        Source(f"crds/kserve-v0.20.0/serving.kserve.io_{name}.yaml", f"{_KSERVE}/{sub}serving.kserve.io_{name}.yaml", d)
        for name, sub, d in (
            ("clusterservingruntimes", "", "c6f6bbb1b4b11afd1e38bd6d7255a8795b86efa2b7d14946ccff9d23592e6846"),
            (
                "clusterstoragecontainers",
                "clusterstoragecontainer/",
                "47ec2b6caeeb0c210d8be3138ed7d391f74043e3ed779177d36ceb4aa2a5d288",
            ),
            ("inferencegraphs", "", "b2e246d7a055937ea56de13850d0f4f993f1825b078a4c901944b99bba1800ca"),
            ("inferenceservices", "", "57c3bf13f77de94678bf2ae3748056ec071ad2b9e88d6a28f44fb4710758fcff"),
            ("servingruntimes", "", "380a3e1e1444cef9b8b88819596692728868205a2147dc66423be469a4a7bbb1"),
            ("trainedmodels", "", "8ca09aaab46af84b1e697a3b84c6b5482bb7c006a5a6ba764343999682c300e7"),
        )
    ),
    *(
        Source(
            f"crds/prometheus-operator-v0.93.0/monitoring.coreos.com_{name}.yaml",
            f"{_PROM}/example/prometheus-operator-crd/monitoring.coreos.com_{name}.yaml",
            digest,
        )
        for name, digest in (
            ("podmonitors", "45a93443daa687d3654f7e9631909ff7edcdf3ec09c5e60251b74aa2722aee5d"),
            ("prometheusrules", "78be98554b9c8506ab2b4f4feb91c5f3a56e536a0a510f3a8e876a459970d56d"),
            ("servicemonitors", "a99047972c9dd7679ce2050b9968e8a08773492e671b3e17abd476d42aa78a32"),
        )
    ),
    *(
        Source(
            f"crds/kubeflow-trainer-v2.3.0/trainer.kubeflow.org_{name}.yaml",
            f"{_TRAINER}/trainer.kubeflow.org_{name}.yaml",
            d,
        )
        for name, d in (
            ("clustertrainingruntimes", "ec84dc3388fcdbe8c61d3c247a773d14458dd9438e995bea8e50d2a18080eef9"),
            ("trainingruntimes", "69b8dbdf60a18e28cddcc2b8dfc4ce72a943e14b531b9389d593118faee4919f"),
            ("trainjobs", "a742cafc5b5582640c7e0b7467c024fc237256fbca5ba0a9f0531dfb66d64416"),
        )
    ),
    Source(
        "crds/kubeflow-training-operator-v1.9.4/kubeflow.org_pytorchjobs.yaml",
        f"{_OPERATOR}/kubeflow.org_pytorchjobs.yaml",
        "8b8a8a719cc94173169290251e817f7ac2bb425c20b6c2fa813397bcf4e932ed",
    ),
    *(
        Source(
            f"crds/istio-api-b8f8791/{name}.security.istio.io.yaml", _ISTIO, _ISTIO_SHA256, f"{name}.security.istio.io"
        )
        for name in ("authorizationpolicies", "peerauthentications", "requestauthentications")
    ),
    *(
        Source(f"grafana-11.6/{name}.jsonschema.json", f"{_GRAFANA}/{name}.jsonschema.json", digest)
        for name, digest in (
            ("common", "49a64460ea9a311209af1524e29e545520da4a0d1de90cb955b9e99ee6d85db1"),
            ("dashboard", "d51fb7ba33392084d784c89a4c07cc5102b008904a32add481a6061f4260fc96"),
            ("prometheus", "307ff39c17e127d94704ec16503221606a7fbb0dbd0743daf71b40ef8c166987"),
            ("stat", "da547c8b1e52883a77e876f34d90d6034266ca8488a5601900ca26fc01d74b9e"),
            ("timeseries", "77ba36d66bbfcb363eeb5e6957813ca4b4cbc5a5bc4e8a12034d4c3b8cbbbde4"),
        )
    ),
)

HOW_TO_GET = (
    "run `make schemas` (downloads the pinned upstream files into .tools/schemas; needs raw.githubusercontent.com) "
    f"or set {SCHEMAS_ENV} to a folder holding crds/ and grafana-11.6/ laid out as tests/deploy/get_schemas.py "
    "SOURCES lists"
)


class SchemaFetchError(RuntimeError):
    """A pinned schema that could not be downloaded, or whose bytes are not the pinned ones."""


def _complete(folder: Path) -> bool:
    return all((folder / source.path).is_file() for source in SOURCES)


def schemas_dir() -> Path | None:
    """The folder the tests read: ``$APD_SCHEMAS_DIR``, else an offline copy, else a complete ``.tools/schemas``."""
    configured = os.environ.get(SCHEMAS_ENV)
    if configured:
        return Path(configured)
    return next((folder for folder in (*OFFLINE, DOWNLOADED) if folder.is_dir() and _complete(folder)), None)


def cut_document(text: str, name: str) -> str:
    """The document of a multi-document YAML file whose ``metadata.name`` is ``name``, verbatim."""
    for document in re.split(r"(?m)^---\s*\n", text):
        if re.search(rf"(?m)^  name: {re.escape(name)}\s*$", document.split("\nspec:", 1)[0]):
            return document
    raise SchemaFetchError(f"no document named {name} in the downloaded file")


def fetch(dest: Path, sources: Iterable[Source] | None = None, timeout: float = 60) -> list[Path]:
    """Download every source missing under ``dest``, checking each URL's bytes against its pinned SHA-256."""
    written, downloads = [], {}
    for source in SOURCES if sources is None else sources:
        target = dest / source.path
        if target.is_file():
            continue
        if source.url not in downloads:
            try:
                with urllib.request.urlopen(source.url, timeout=timeout) as response:
                    data = response.read()
            except OSError as exc:
                raise SchemaFetchError(f"cannot download {source.url}: {exc}") from exc
            digest = hashlib.sha256(data).hexdigest()
            if digest != source.sha256:
                raise SchemaFetchError(f"{source.url}: SHA-256 {digest} is not the pinned {source.sha256}")
            downloads[source.url] = data
        data = downloads[source.url]
        content = cut_document(data.decode(), source.document).encode() if source.document else data
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(target.suffix + ".part")
        partial.write_bytes(content)
        partial.replace(target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, help="download into this folder (default: .tools/schemas)")
    args = parser.parse_args(argv)
    found = None if args.dest else schemas_dir()
    if found is not None:
        print(found)
        return 0
    dest = args.dest or DOWNLOADED
    try:
        written = fetch(dest)
    except SchemaFetchError as exc:
        print(f"schemas: {exc}\nThe deployment tests need them: {HOW_TO_GET}.", file=sys.stderr)
        return 1
    print(f"downloaded {len(written)} schema files", file=sys.stderr)
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
