"""Benchmark of the data path: decoding + preprocessing per image, ingest (cold and cached), validate, and a large
dataset ingested by reference (``--reference-images``, 100,000 by default) then validated.

Run with ``make bench``; prints figures, asserts nothing. Images are real JPEG encodings of smooth random
content made here (no network).
"""

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from components.common.dataset_files import DatasetImages
from components.common.images import decode_image
from components.common.logging import configure_logging
from components.common.settings import Settings
from components.common.transforms import Preprocessing, image_crops, load_image
from components.ingest import ingest_dataset
from components.validate import validate_dataset


def _jpeg(width: int, height: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(1, height // 32), max(1, width // 32), 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _median_ms(fn: object, data: bytes, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn(data)  # type: ignore[operator]
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def bench_decode(settings: Settings) -> None:
    native = Preprocessing()  # the served path of native-resolution models: every pixel decoded, K crops
    legacy = Preprocessing(image_size=224, mode="resize", max_crops=1, crop_align=1)  # models before it
    print(f"decode + preprocess, ms per image (median); native: {native.max_crops} crops of {native.image_size} px")
    print(f"  {'image':>14}  {'full decode':>11}  {'native crops (served)':>21}  {'legacy draft + resize 224':>25}")
    for label, (w, h), rounds in (("0.3 MP", (640, 480), 30), ("2 MP", (1600, 1200), 15), ("12 MP", (4000, 3000), 5)):
        data = _jpeg(w, h, seed=w)
        full = _median_ms(lambda d: decode_image(d, settings.images), data, rounds)
        crops = _median_ms(lambda d: image_crops(load_image(d, settings.images, native), native), data, rounds)
        resize = _median_ms(lambda d: image_crops(load_image(d, settings.images, legacy), legacy), data, rounds)
        print(f"  {label:>6} {w}x{h:<5}  {full:>11.1f}  {crops:>21.1f}  {resize:>25.1f}")


def bench_ingest_validate(settings: Settings, count: int = 400) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(count):
            folder = root / "src" / ("real" if i % 2 else "ai_generated")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}.jpg").write_bytes(_jpeg(512, 384, seed=i))
        cache = root / "cache"
        rates = {}
        for name in ("cold", "cached"):
            started = time.perf_counter()
            result = ingest_dataset(str(root / "src"), root / f"out-{name}", cache, settings.splits, settings.s3)
            rates[name] = count / (time.perf_counter() - started)
        started = time.perf_counter()
        validate_dataset(DatasetImages(root / "out-cold"), settings.images, settings.validation)
        validate_rate = count / (time.perf_counter() - started)
    print(f"ingest of {count} JPEGs (512x384), dataset {result.summary.dataset_version}:")
    print(f"  cold (read + hash + store): {rates['cold']:8.0f} images/s")
    print(f"  re-run, unchanged source:   {rates['cached']:8.0f} images/s ({rates['cached'] / rates['cold']:.1f}x)")
    print(f"validate (full decode of every file): {validate_rate:.0f} images/s")


def _small_jpegs(root: Path, count: int) -> int:
    """``count`` distinct 64x64 JPEGs (a colour gradient plus noise), half real and half ai_generated; their bytes."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 64, dtype=np.float32)
    total = 0
    for label in ("real", "ai_generated"):
        (root / label).mkdir(parents=True)
    for i in range(count):
        gradient = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], np.float32(i % 256)), axis=-1)
        pixels = np.clip(gradient + rng.normal(0, 24, gradient.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=85)
        path = root / ("real" if i % 2 else "ai_generated") / f"{i:06d}.jpg"
        path.write_bytes(buf.getvalue())
        total += len(buf.getvalue())
    return total


def _stored_bytes(*folders: Path) -> int:
    """Bytes of every file below ``folders`` but the manifests, summaries and the ingest cache's index."""
    skip = {"manifest.parquet", "dataset.json", "index.json"}
    return sum(p.stat().st_size for f in folders for p in f.rglob("*") if p.is_file() and p.name not in skip)


def bench_by_reference(settings: Settings, count: int) -> None:
    """Ingest ``count`` small JPEGs by reference, validate them, ingest again; the issue's target: ingest +
    validate under 2 minutes for 100,000 images, nothing copied."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source_bytes = _small_jpegs(root / "src", count)
        out, cache = root / "ds", root / "cache"
        started = time.perf_counter()
        first = ingest_dataset(str(root / "src"), out, cache, settings.splits, settings.s3, by_reference=True)
        ingest_seconds = time.perf_counter() - started
        started = time.perf_counter()
        report = validate_dataset(DatasetImages(out, settings.s3), settings.images, settings.validation)
        validate_seconds = time.perf_counter() - started
        started = time.perf_counter()
        again = ingest_dataset(str(root / "src"), root / "ds2", cache, settings.splits, settings.s3, by_reference=True)
        again_seconds = time.perf_counter() - started
        copied = _stored_bytes(out, root / "ds2", cache)
    total = ingest_seconds + validate_seconds
    version = first.summary.dataset_version
    print(f"{count} JPEGs of 64x64 ({source_bytes / 1e6:.0f} MB) by reference, dataset {version}:")
    print(f"  ingest (read + hash, nothing copied): {ingest_seconds:6.1f} s ({count / ingest_seconds:.0f} img/s)")
    print(f"  validate (read + full decode):        {validate_seconds:6.1f} s ({count / validate_seconds:.0f} img/s)")
    print(f"  ingest + validate:                    {total:6.1f} s (target < 120 s; passed: {report.passed})")
    print(f"  image bytes copied:                   {copied:6d} (target 0)")
    print(f"  re-ingest, unchanged source:          {again_seconds:6.1f} s ({again.bytes_read} image bytes read)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reference-images", type=int, default=100_000, help="images of the by-reference figure")
    args = parser.parse_args()
    settings = Settings()
    configure_logging(settings.logging.model_copy(update={"level": "WARNING"}))
    bench_decode(settings)
    bench_ingest_validate(settings)
    bench_by_reference(settings, args.reference_images)


if __name__ == "__main__":
    main()
