"""Benchmark of the data path: decoding + preprocessing per image, ingest (cold and cached), validate.

Run with ``make bench``; prints figures, asserts nothing. Images are real JPEG encodings of smooth random
content made here (no network).
"""

import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

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
        validate_dataset(root / "out-cold", settings.images, settings.validation)
        validate_rate = count / (time.perf_counter() - started)
    print(f"ingest of {count} JPEGs (512x384), dataset {result.summary.dataset_version}:")
    print(f"  cold (read + hash + store): {rates['cold']:8.0f} images/s")
    print(f"  re-run, unchanged source:   {rates['cached']:8.0f} images/s ({rates['cached'] / rates['cold']:.1f}x)")
    print(f"validate (full decode of every file): {validate_rate:.0f} images/s")


def main() -> None:
    settings = Settings()
    configure_logging(settings.logging.model_copy(update={"level": "WARNING"}))
    bench_decode(settings)
    bench_ingest_validate(settings)


if __name__ == "__main__":
    main()
