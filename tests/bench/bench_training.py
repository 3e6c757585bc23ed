"""Benchmark: images/s of the train component's loop vs a bare PyTorch loop over the same data, model and batch.

Both run in this process, interleaved for a few rounds (medians reported), on the same ingested dataset (the
demo dataset when built, else generated JPEGs), with the same DataLoader settings and number of epochs; only
training steps are timed (validation excluded).
Run with ``make bench``; prints figures, asserts nothing.
"""

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from components.common.dataset import read_manifest
from components.common.logging import configure_logging
from components.common.model import build_model
from components.common.seeding import seed_everything
from components.common.settings import MlflowSettings, Settings
from components.common.tracking import setup_tracking
from components.ingest import ingest_dataset
from components.train import TrainConfig, make_train_loader, train_detector


def _generated_source(root: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / ("real" if i % 2 else "ai_generated")
        folder.mkdir(parents=True, exist_ok=True)
        small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((256, 256))
        buf = io.BytesIO()
        small.save(buf, format="JPEG", quality=90)
        (folder / f"{i}.jpg").write_bytes(buf.getvalue())
    return root


def bare_loop(cfg: TrainConfig, dataset_dir: Path, settings: Settings) -> float:
    """The plainest loop over the same pipeline: no validation, logging, tracking, scheduling or progress bar."""
    generator = seed_everything(cfg.seed)
    model = build_model(cfg.model_config())
    prep = model.config.preprocessing
    loader = make_train_loader(cfg, dataset_dir, read_manifest(dataset_dir), settings.images, prep, generator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    criterion = torch.nn.BCEWithLogitsLoss()
    seconds, seen = 0.0, 0
    for _ in range(cfg.epochs):
        model.train()
        started = time.perf_counter()
        for images, targets, _ in loader:
            optimizer.zero_grad(set_to_none=True)
            criterion(model(images), targets).backward()
            optimizer.step()
            seen += len(targets)
        seconds += time.perf_counter() - started
    return seen / seconds


def rates_text(rates: list[float]) -> str:
    return ", ".join(f"{r:.1f}" for r in rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-train-images", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings = Settings()
    configure_logging(settings.logging.model_copy(update={"level": "WARNING"}))
    cfg = TrainConfig(
        epochs=args.epochs,
        image_size=args.image_size,
        batch_size=args.batch_size,
        max_train_images=args.max_train_images,
        patience=args.epochs,
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        demo = settings.data_dir / "demo"
        source = demo if demo.exists() else _generated_source(root / "src", 2 * args.max_train_images)
        dataset = root / "dataset"
        summary = ingest_dataset(str(source), dataset, root / "cache", settings.splits, settings.s3).summary
        tracking = MlflowSettings(tracking_uri=f"sqlite:///{root}/mlflow.db", artifact_root=str(root / "artifacts"))
        experiment = setup_tracking(tracking)
        bare_rates, component_rates = [], []
        for round_ in range(args.rounds):  # interleaved, so drifts of this shared machine hit both alike
            bare_rates.append(bare_loop(cfg, dataset, settings))
            out = root / f"out{round_}"
            result = train_detector(cfg, dataset, out, settings.images, experiment, summary.dataset_version)
            component_rates.append(result.train_images_per_second)
    bare, rate = statistics.median(bare_rates), statistics.median(component_rates)
    print(
        f"training throughput ({cfg.backbone}, {cfg.image_size} px, batch {cfg.batch_size}, {cfg.epochs} epochs, "
        f"{min(cfg.max_train_images, summary.counts['train']['real'] + summary.counts['train']['ai_generated'])} "
        f"train images from {source}, {torch.get_num_threads()} threads):"
    )
    print(f"  bare PyTorch loop: {bare:7.1f} images/s (median of {rates_text(bare_rates)})")
    print(f"  train component:   {rate:7.1f} images/s (median of {rates_text(component_rates)})")
    print(f"  ratio:             {rate / bare:7.2f}x (target >= 0.9)")


if __name__ == "__main__":
    main()
