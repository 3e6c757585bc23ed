"""Benchmark: images/s of the train component's loop vs a bare PyTorch loop over the same data, model and batch;
then the bare loop reading the same dataset from local disk (copied) vs by reference from a local S3 server.

Both run in this process, interleaved for a few rounds (medians reported), on the same ingested dataset (the
demo dataset when built, else generated JPEGs), with the same DataLoader settings and number of epochs; only
training steps are timed (validation excluded). The S3 server is the tests' (moto, threads of this process): it
takes its share of this machine's CPU, so the by-reference figure is a lower bound for a store elsewhere.
Run with ``make bench``; prints figures, asserts nothing.
"""

import argparse
import dataclasses
import io
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import torch
from PIL import Image

from components.common.dataset_files import DatasetImages
from components.common.logging import configure_logging
from components.common.model import build_model
from components.common.seeding import seed_everything
from components.common.settings import MlflowSettings, Settings
from components.common.tracking import new_run, setup_tracking
from components.ingest import ingest_dataset
from components.train import TrainConfig, make_train_loader, train_detector
from components.train_ranks import RankSpec, run_training
from tests.helpers.servers import empty_s3_server, upload_folder


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


def bare_loop(cfg: TrainConfig, images: DatasetImages, settings: Settings) -> float:
    """The plainest loop over the same pipeline: no validation, logging, tracking, scheduling or progress bar."""
    generator = seed_everything(cfg.seed)
    model = build_model(cfg.model_config())
    prep = model.config.preprocessing
    # make_train_loader's TrainImages takes a reader (this one reaches S3) as well as the folder train_detector gives.
    loader = make_train_loader(cfg, images, images.manifest(), settings.images, prep, generator)
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


def bench_by_reference(cfg: TrainConfig, source: Path, root: Path, settings: Settings, rounds: int) -> None:
    """The bare loop over ``source`` ingested twice: copied to local disk, and by reference to its copy on a local
    S3 server (each image a GET with If-Match, a batch's in parallel)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log
    local = root / "by-copy"
    summary = ingest_dataset(str(source), local, root / "cache", settings.splits, settings.s3).summary
    with empty_s3_server() as s3:
        upload_folder(s3, source, "photos", "source")
        referenced = root / "by-reference"
        by_reference = ingest_dataset("s3://photos/source", referenced, root / "cache", settings.splits, s3,
                                      by_reference=True).summary  # fmt: skip
        local_rates, s3_rates = [], []
        for _ in range(rounds):  # interleaved, as above
            local_rates.append(bare_loop(cfg, DatasetImages(local), settings))
            s3_rates.append(bare_loop(cfg, DatasetImages(referenced, s3), settings))
    disk, remote = statistics.median(local_rates), statistics.median(s3_rates)
    same = "the same" if by_reference.dataset_version == summary.dataset_version else "ANOTHER"
    print(f"training throughput by data location (bare loop, {cfg.num_workers} DataLoader worker(s), dataset "
          f"{summary.dataset_version}, {same} version by reference):")  # fmt: skip
    print(f"  local disk (copied):       {disk:7.1f} images/s (median of {rates_text(local_rates)})")
    print(f"  S3 by reference (moto):    {remote:7.1f} images/s (median of {rates_text(s3_rates)})")
    print(f"  ratio:                     {remote / disk:7.2f}x (target >= 0.9)")


def bench_processes(cfg: TrainConfig, dataset: Path, version: str, root: Path, settings: Settings, rounds: int) -> None:
    """The train step's images/s on 1 process vs 2 (torchrun on this machine, one thread and half of every batch
    each; what ``-p train_procs=2`` runs), on the same data and config, in MLflow runs of ``settings.mlflow``."""
    experiment = setup_tracking(settings.mlflow)
    rates: dict[int, list[float]] = {1: [], 2: []}
    for round_ in range(rounds):  # interleaved, as above
        for procs, measured in rates.items():
            config = dataclasses.replace(cfg, train_procs=procs)
            spec = RankSpec(config, str(dataset), str(root / f"procs{procs}-{round_}"), new_run(experiment), version)
            run_training(spec, settings)
            measured.append(mlflow.MlflowClient().get_run(spec.run_id).data.metrics["train_images_per_second"])
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(f"training throughput by process count (the train step, batch {cfg.batch_size} split over the processes):")
    single = f"1 process ({torch.get_num_threads()} threads):"
    print(f"  {single:<29}{one:7.1f} images/s (median of {rates_text(rates[1])})")
    print(f"  {'2 processes (1 thread each):':<29}{two:7.1f} images/s (median of {rates_text(rates[2])})")
    print(f"  {'ratio:':<29}{two / one:7.2f}x")


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
        os.environ["APD_MLFLOW__TRACKING_URI"] = tracking.tracking_uri  # for the Settings of bench_processes' ranks
        bare_rates, component_rates = [], []
        for round_ in range(args.rounds):  # interleaved, so drifts of this shared machine hit both alike
            bare_rates.append(bare_loop(cfg, DatasetImages(dataset), settings))
            out = root / f"out{round_}"
            result = train_detector(
                cfg, DatasetImages(dataset), out, settings.images, new_run(experiment), summary.dataset_version
            )
            component_rates.append(result.train_images_per_second)
        bench_processes(cfg, dataset, summary.dataset_version, root, Settings(), args.rounds)
    bare, rate = statistics.median(bare_rates), statistics.median(component_rates)
    print(
        f"training throughput ({cfg.backbone}, {cfg.image_size} px, batch {cfg.batch_size}, {cfg.epochs} epochs, "
        f"{min(cfg.max_train_images, summary.counts['train']['real'] + summary.counts['train']['ai_generated'])} "
        f"train images from {source}, {torch.get_num_threads()} threads):"
    )
    print(f"  bare PyTorch loop: {bare:7.1f} images/s (median of {rates_text(bare_rates)})")
    print(f"  train component:   {rate:7.1f} images/s (median of {rates_text(component_rates)})")
    print(f"  ratio:             {rate / bare:7.2f}x (target >= 0.9)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = _generated_source(root / "src", 2 * args.max_train_images)
        bench_by_reference(cfg, source, root, settings, args.rounds)


if __name__ == "__main__":
    main()
