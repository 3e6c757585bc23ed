"""Getting the upstream schemas: pinned digests hold, multi-document files are cut, failures say how to get them."""

import hashlib
import http.server
import re
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.deploy import get_schemas
from tests.deploy.get_schemas import SchemaFetchError, Source, cut_document, fetch

CRD_A = (
    "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"
    "metadata:\n  name: as.example.io\nspec:\n  group: example.io\n"
)
CRD_B = CRD_A.replace("as.example.io", "bs.example.io")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server standing in for raw.githubusercontent.com, serving a folder; yields (base URL, folder)."""
    root = tmp_path / "upstream"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def test_fetch_checks_digests_cuts_documents_and_is_idempotent(upstream: tuple[str, Path], tmp_path: Path) -> None:
    base, root = upstream
    whole = b'{"$schema": "http://json-schema.org/draft-07/schema#"}\n'
    bundle = f"---\n{CRD_A}---\n{CRD_B}".encode()
    (root / "dashboard.json").write_bytes(whole)
    (root / "bundle.yaml").write_bytes(bundle)
    sources = [
        Source("grafana/dashboard.json", f"{base}/dashboard.json", _sha256(whole)),
        Source("crds/a.yaml", f"{base}/bundle.yaml", _sha256(bundle), "as.example.io"),
        Source("crds/b.yaml", f"{base}/bundle.yaml", _sha256(bundle), "bs.example.io"),
    ]
    dest = tmp_path / "schemas"
    assert fetch(dest, sources) == [dest / "grafana/dashboard.json", dest / "crds/a.yaml", dest / "crds/b.yaml"]
    assert (dest / "grafana/dashboard.json").read_bytes() == whole
    assert (dest / "crds/a.yaml").read_text() == CRD_A
    assert (dest / "crds/b.yaml").read_text() == CRD_B
    (root / "dashboard.json").unlink()  # nothing is downloaded again
    assert fetch(dest, sources) == []


def test_a_changed_upstream_file_is_refused(upstream: tuple[str, Path], tmp_path: Path) -> None:
    base, root = upstream
    (root / "x.json").write_bytes(b"{}")
    pinned = _sha256(b"{ }")
    with pytest.raises(
        SchemaFetchError, match=re.escape(f"x.json: SHA-256 {_sha256(b'{}')} is not the pinned {pinned}")
    ):
        fetch(tmp_path / "schemas", [Source("x.json", f"{base}/x.json", pinned)])
    assert not (tmp_path / "schemas").exists()


def test_a_missing_document_is_named() -> None:
    with pytest.raises(SchemaFetchError, match=re.escape("no document named cs.example.io")):
        cut_document(f"---\n{CRD_A}---\n{CRD_B}", "cs.example.io")


def test_nothing_found_says_how_to_get_them(
    upstream: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base, _ = upstream
    monkeypatch.delenv(get_schemas.SCHEMAS_ENV, raising=False)
    monkeypatch.setattr(get_schemas, "OFFLINE", (tmp_path / "no-shared",))
    monkeypatch.setattr(get_schemas, "DOWNLOADED", tmp_path / "tools")
    monkeypatch.setattr(get_schemas, "SOURCES", (Source("x.json", f"{base}/gone.json", "0" * 64),))
    assert get_schemas.schemas_dir() is None
    assert get_schemas.main([]) == 1
    err = capsys.readouterr().err
    assert f"cannot download {base}/gone.json" in err
    assert "make schemas" in err
    assert get_schemas.SCHEMAS_ENV in err


def test_the_pins_are_the_offline_copies() -> None:
    """Every whole-file pin is the SHA-256 of the offline copy (the same upstream bytes), so a typo fails here."""
    offline = next((folder for folder in get_schemas.OFFLINE if folder.is_dir()), None)
    if offline is None:
        pytest.skip("no offline copy of the schemas on this machine to compare the pins with")
    for source in get_schemas.SOURCES:
        assert source.url.startswith("https://raw.githubusercontent.com/")
        copy = offline / source.path
        assert copy.is_file(), f"{source.path} is pinned but not in {offline}"
        if source.document is None:
            assert _sha256(copy.read_bytes()) == source.sha256, source.path
        else:
            assert f"name: {source.document}" in copy.read_text()
