"""``apd data demo``, ``apd ingest`` and ``apd validate``: datasets."""

import argparse
from pathlib import Path

from components.cli.command import AddParser
from components.cli.exits import DatasetRejectedError
from components.common.settings import Settings


def data_demo(args: argparse.Namespace, settings: Settings) -> None:
    from components.common.demo_data import build_demo_dataset

    out = args.out or settings.data_dir / "demo"
    summary = build_demo_dataset(
        out,
        seed=settings.seed,
        crops_per_photo=args.crops_per_photo,
        generator=args.generator,
        first_crop=args.first_crop,
    )
    state = "reused (cached)" if summary.cached else f"built in {summary.seconds:.0f} s"
    print(f"demo dataset {state}: {summary.images} images from {summary.photos} photos in {summary.out_dir}")


def ingest(args: argparse.Namespace, settings: Settings) -> None:
    from components.ingest import ingest_dataset

    result = ingest_dataset(
        args.source,
        args.out,
        settings.data_dir / "cache",
        settings.splits,
        settings.s3,
        args.image_column,
        args.label_column,
        args.label_map,
        args.by_reference,
    )
    kind = " (by reference)" if result.by_reference else ""
    print(f"dataset version {result.summary.dataset_version}: {result.summary.num_images} images in {args.out}{kind}")


def validate(args: argparse.Namespace, settings: Settings) -> None:
    """``apd validate``: the report on stdout (and next to the dataset); exit 1 when the dataset fails."""
    from components.common.dataset_files import DatasetImages
    from components.validate import validate_dataset, write_report

    report = validate_dataset(DatasetImages(args.dataset, settings.s3), settings.images, settings.validation)
    write_report(report, args.dataset / "validation.json", args.dataset / "validation.md")
    print(report.to_markdown())
    if not report.passed:
        raise DatasetRejectedError(f"dataset {args.dataset} failed validation")


def add_source_columns(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-column", default="image", help="Parquet sources: the image column")
    parser.add_argument("--label-column", default="label", help="Parquet sources: the label column")
    parser.add_argument("--label-map", default="", help="Parquet sources: e.g. '0=ai_generated,1=real'")


def add_commands(add_parser: AddParser) -> None:
    data = add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    demo = data.add_parser("demo", help="build the offline demo dataset (cached)")
    demo.add_argument("--out", type=Path, help="output folder (default: $APD_DATA_DIR/demo)")
    demo.add_argument("--crops-per-photo", type=int, default=16, help="crops taken from each source photo")
    demo.add_argument("--generator", default="mix", help="how ai_generated twins are made: mix (the default: six "
                      "Real-ESRGAN recipes rotated through each photo's crops) or one recipe of demo_data.GENERATORS, "
                      "e.g. anime-2x (the incident drill's new generator)")  # fmt: skip
    demo.add_argument("--first-crop", type=int, default=0, help="skip this many crops per photo (fresh crops)")
    demo.set_defaults(func=data_demo)

    ingest_parser = add_parser("ingest", help="ingest a labelled image collection")
    ingest_parser.add_argument("source", help="class-folder tree, s3://bucket/prefix, or Parquet file/folder")
    ingest_parser.add_argument("--out", type=Path, required=True, help="output dataset folder")
    ingest_parser.add_argument(
        "--by-reference",
        action="store_true",
        help="copy no image: the manifest points at the source files or S3 objects, checked unchanged when read "
        "(not Parquet)",
    )
    add_source_columns(ingest_parser)
    ingest_parser.set_defaults(func=ingest)

    validate_parser = add_parser("validate", help="validate an ingested dataset (exit 1 when it fails)")
    validate_parser.add_argument("dataset", type=Path, help="ingested dataset folder")
    validate_parser.set_defaults(func=validate)
