"""`apd predict` against a real `apd serve` on loopback (a small real detector): a folder of real images with bad
ones, resume, REST against gRPC, an S3 prefix on a real S3 server (moto), a URL list from a real HTTP server, and the
batch-scoring pipeline under KFP's local runner."""

import csv
import functools
import hashlib
import json
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from minio import Minio

from components.common.settings import S3Settings
from pipelines.batch import batch_scoring_pipeline
from pipelines.local import run_local
from tests.helpers.images import encode
from tests.helpers.net import free_port
from tests.helpers.servers import ModelServer

pytestmark = pytest.mark.integration

CORRUPT = "the JPEG image is truncated or corrupt"
GIF = "GIF images are not accepted; accepted formats: JPEG, PNG, WEBP"


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real JPEG, PNG and WebP files (one in a subfolder), a truncated JPEG and a GIF."""
    folder = tmp_path_factory.mktemp("catalogue")
    (folder / "shop").mkdir()
    (folder / "a.jpg").write_bytes(encode("JPEG", (300, 200), seed=1))
    (folder / "shop" / "b.png").write_bytes(encode("PNG", (120, 90), seed=2))
    (folder / "shop" / "c.webp").write_bytes(encode("WEBP", (80, 80), seed=3))
    (folder / "broken.jpg").write_bytes(encode("JPEG", (300, 200), seed=4)[:900])
    (folder / "anim.gif").write_bytes(encode("GIF", (64, 48), seed=5))
    return folder


def _predict(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`apd predict` as a user runs it: its own process (which is what lets tritonclient.grpc load)."""
    return subprocess.run(
        [sys.executable, "-m", "components.cli", "predict", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "APD_LOGGING__LEVEL": "WARNING", **(env or {})},
        check=False,
    )


def _csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        return {row["source"]: row for row in csv.DictReader(handle)}


def test_a_folder_scores_into_csv_with_error_rows_and_a_rerun_skips_everything(
    model_server: ModelServer, catalogue: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results.csv"
    done = _predict(str(catalogue), "--out", str(out), "--url", model_server.url)
    assert done.returncode == 0, done.stderr
    assert "scored 3, errors 2, skipped 0" in done.stdout
    rows = _csv(out)
    assert sorted(rows) == sorted(str(p) for p in catalogue.rglob("*") if p.is_file())
    for name in ("a.jpg", "shop/b.png", "shop/c.webp"):
        row = rows[str(catalogue / name)]
        assert row["sha256"] == hashlib.sha256((catalogue / name).read_bytes()).hexdigest()
        assert 0 <= float(row["probability"]) <= 1
        assert row["label"] == ("ai_generated" if float(row["probability"]) >= 0.5 else "real")
        assert row["confidence"] in {"low", "medium", "high"}
        assert row["model_version"] == "models-test"
        assert row["error"] == ""
    assert rows[str(catalogue / "broken.jpg")]["error"].startswith(CORRUPT)
    assert rows[str(catalogue / "anim.gif")]["error"] == GIF
    assert rows[str(catalogue / "anim.gif")]["probability"] == ""
    before = out.read_bytes()
    again = _predict(str(catalogue), "--out", str(out), "--url", model_server.url)
    assert again.returncode == 0, again.stderr
    assert "scored 0, errors 0, skipped 5" in again.stdout
    assert out.read_bytes() == before


def test_rest_and_grpc_give_the_same_probabilities(model_server: ModelServer, catalogue: Path, tmp_path: Path) -> None:
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("d.jpg", encode("JPEG", (200, 150), seed=6))
    rest = _predict(str(catalogue), str(archive), "--out", str(tmp_path / "rest.parquet"), "--url", model_server.url)
    grpc = _predict(str(catalogue), str(archive), "--out", str(tmp_path / "grpc.jsonl"),
                    "--url", f"127.0.0.1:{model_server.grpc}", "--protocol", "grpc", "--batch-size", "2")  # fmt: skip
    assert rest.returncode == 0, rest.stderr
    assert grpc.returncode == 0, grpc.stderr
    by_rest = {r["source"]: r for r in pq.read_table(tmp_path / "rest.parquet").to_pylist()}
    by_grpc = {r["source"]: r for r in map(json.loads, (tmp_path / "grpc.jsonl").read_text().splitlines())}
    assert set(by_rest) == set(by_grpc)
    assert f"{archive}!d.jpg" in by_rest
    for source, row in by_rest.items():
        other = by_grpc[source]
        assert (row["sha256"], row["label"], row["error"]) == (other["sha256"], other["label"], other["error"])
        if row["error"] is None:
            assert row["probability"] == pytest.approx(other["probability"], abs=1e-6)
        else:
            assert other["probability"] is None


def test_provenance_columns_over_rest_and_grpc(
    model_server: ModelServer, declared: dict[str, bytes], tmp_path: Path
) -> None:
    """What the files declare reaches every output format, the same over both protocols."""
    folder = tmp_path / "declared"
    folder.mkdir()
    names = {"c2pa_ai_jpeg": "signed.jpg", "comfyui_png": "comfy.png", "camera_exif_jpeg": "camera.jpg",
             "plain_jpeg": "plain.jpg"}  # fmt: skip
    for key, name in names.items():
        (folder / name).write_bytes(declared[key])
    rest = _predict(str(folder), "--out", str(tmp_path / "rest.parquet"), "--url", model_server.url)
    grpc = _predict(str(folder), "--out", str(tmp_path / "grpc.csv"), "--url", f"127.0.0.1:{model_server.grpc}",
                    "--protocol", "grpc")  # fmt: skip
    assert rest.returncode == 0, rest.stderr
    assert grpc.returncode == 0, grpc.stderr
    by_rest = {Path(r["source"]).name: r for r in pq.read_table(tmp_path / "rest.parquet").to_pylist()}
    by_grpc = {Path(source).name: row for source, row in _csv(tmp_path / "grpc.csv").items()}
    expected = {  # ai_declared, c2pa (the server trusts the test CA), generator, verdict source
        "signed.jpg": (True, "trusted", "DALL-E", "provenance"),
        "comfy.png": (True, "absent", "ComfyUI", "provenance"),
        "camera.jpg": (False, "absent", None, "pixels"),
        "plain.jpg": (False, "absent", None, "pixels"),
    }
    for name, (ai_declared, c2pa, generator, source) in expected.items():
        row, other = by_rest[name], by_grpc[name]
        assert (row["ai_declared"], row["c2pa"], row["provenance_generator"], row["verdict_source"]) == (
            ai_declared, c2pa, generator, source,
        ), name  # fmt: skip
        assert (other["ai_declared"], other["c2pa"], other["provenance_generator"], other["verdict_source"]) == (
            str(ai_declared), c2pa, generator or "", source,
        ), name  # fmt: skip
        if ai_declared:
            assert row["label"] == other["label"] == "ai_generated"


def test_an_s3_prefix(model_server: ModelServer, catalogue: Path, s3_server: S3Settings, tmp_path: Path) -> None:
    client = Minio(s3_server.endpoint, access_key=s3_server.access_key, secret_key=s3_server.secret_key, secure=False)
    client.make_bucket("photos")
    files = sorted(p for p in catalogue.rglob("*") if p.is_file())
    for path in files:
        client.fput_object("photos", f"batch-1/{path.relative_to(catalogue).as_posix()}", str(path))
    client.fput_object("photos", "batch-2/a.jpg", str(catalogue / "a.jpg"))  # outside the prefix
    env = {"APD_S3__ENDPOINT": s3_server.endpoint, "APD_S3__ACCESS_KEY": str(s3_server.access_key),
           "APD_S3__SECRET_KEY": str(s3_server.secret_key)}  # fmt: skip
    out = tmp_path / "s3.parquet"
    done = _predict("s3://photos/batch-1", "--out", str(out), "--url", model_server.url, env=env)
    assert done.returncode == 0, done.stderr
    rows = {r["source"]: r for r in pq.read_table(out).to_pylist()}
    assert set(rows) == {f"s3://photos/batch-1/{p.relative_to(catalogue).as_posix()}" for p in files}
    assert rows["s3://photos/batch-1/a.jpg"]["sha256"] == hashlib.sha256((catalogue / "a.jpg").read_bytes()).hexdigest()
    assert rows["s3://photos/batch-1/anim.gif"]["error"] == GIF
    assert sum(r["error"] is None for r in rows.values()) == 3
    assert not (tmp_path / "s3.parquet.parts").exists()


@pytest.fixture
def web(catalogue: Path) -> Iterator[str]:
    """A real HTTP server on loopback serving the catalogue folder."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(catalogue))
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_url_list(model_server: ModelServer, catalogue: Path, web: str, tmp_path: Path) -> None:
    big = catalogue / "big.png"
    big.write_bytes(encode("PNG", (400, 400), seed=7))  # about 480 kB of noise
    urls = tmp_path / "urls.txt"
    names = ["a.jpg", "shop/b.png", "anim.gif", "missing.jpg", "big.png"]
    urls.write_text("# the catalogue\n" + "".join(f"{web}/{name}\n" for name in names))
    out = tmp_path / "urls.jsonl"
    try:
        done = _predict(
            str(urls), "--out", str(out), "--url", model_server.url, env={"APD_IMAGES__MAX_BYTES": "300000"}
        )
    finally:
        big.unlink()
    assert done.returncode == 0, done.stderr
    rows = {r["source"].removeprefix(web + "/"): r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == set(names)
    assert rows["a.jpg"]["error"] is None
    assert rows["a.jpg"]["sha256"] == hashlib.sha256((catalogue / "a.jpg").read_bytes()).hexdigest()
    assert rows["shop/b.png"]["label"] in {"real", "ai_generated"}
    assert rows["anim.gif"]["error"] == GIF
    assert rows["missing.jpg"]["error"] == "fetch failed: HTTP 404 File not found"
    assert rows["missing.jpg"]["sha256"] is None
    assert rows["big.png"]["error"].endswith("the limit is 300000 bytes (not fetched)")


def test_a_server_that_is_down_is_an_error_that_names_it(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "a.png").write_bytes(encode("PNG"))
    done = _predict(str(tmp_path / "a.png"), "--out", str(tmp_path / "out.csv"), "--url", url)
    assert done.returncode == 2
    assert f"error: model 'apd-detector' at {url} (rest) is not ready" in done.stderr


def test_the_batch_scoring_pipeline_under_kfp_local(
    model_server: ModelServer, catalogue: Path, s3_server: S3Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Minio(s3_server.endpoint, access_key=s3_server.access_key, secret_key=s3_server.secret_key, secure=False)
    client.make_bucket("catalogue")
    for name in ("a.jpg", "shop/b.png", "anim.gif"):
        client.fput_object("catalogue", f"2026-11/{name}", str(catalogue / name))
    monkeypatch.setenv("APD_S3__ENDPOINT", s3_server.endpoint)  # the step is a subprocess that reads APD_*
    monkeypatch.setenv("APD_S3__ACCESS_KEY", str(s3_server.access_key))
    monkeypatch.setenv("APD_S3__SECRET_KEY", str(s3_server.secret_key))
    task = run_local(batch_scoring_pipeline, tmp_path / "runs", source="s3://catalogue/2026-11", url=model_server.url)
    rows = pq.read_table(task.output.path).to_pylist()
    assert sorted(r["source"] for r in rows) == [
        "s3://catalogue/2026-11/a.jpg",
        "s3://catalogue/2026-11/anim.gif",
        "s3://catalogue/2026-11/shop/b.png",
    ]
    assert [r["error"] for r in rows if r["error"]] == [GIF]
    assert task.output.metadata["scored"] == 2
    assert task.output.metadata["model_versions"] == ["models-test"]
