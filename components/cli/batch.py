"""``apd predict``: batch scoring through the served model (KServe v2 REST or gRPC)."""

import argparse
from pathlib import Path

from components.cli.command import AddParser
from components.cli.exits import ServerUnavailableError
from components.common.settings import Settings


def predict(args: argparse.Namespace, settings: Settings) -> None:
    """``apd predict``: exit 0 when every image has a row (bad images too), 1 when the server stayed unavailable."""
    from components.batch import PredictJob, PredictOptions, run_predict

    options = PredictOptions(
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        max_image_bytes=settings.images.max_bytes,
        retry_errors=args.retry_errors,
    )
    url = args.url or ("127.0.0.1:8081" if args.protocol == "grpc" else "http://127.0.0.1:8080")
    job = PredictJob(
        sources=args.sources,
        out=args.out,
        url=url,
        model=args.model,
        protocol=args.protocol,
        options=options,
        s3=settings.s3,
        fmt=args.format,
        timeout=args.timeout,
    )
    summary = run_predict(job)
    print(summary.text())
    if summary.stopped:
        raise ServerUnavailableError(f"the model server at {url} stayed unavailable")


def add_commands(add_parser: AddParser) -> None:
    parser = add_parser("predict", help="score images with the served model into CSV, JSON Lines or Parquet")
    parser.add_argument("sources", nargs="+", help="image files, folders, .zip, s3://bucket/prefix, .txt URL lists")
    parser.add_argument("--out", type=Path, required=True, help="results file (.csv, .jsonl or .parquet); resumed")
    parser.add_argument("--format", choices=["csv", "jsonl", "parquet"], help="default: from --out's extension")
    parser.add_argument("--url", help="model server (default: http://127.0.0.1:8080, gRPC 127.0.0.1:8081)")
    parser.add_argument("--protocol", choices=["rest", "grpc"], default="rest", help="KServe v2 REST or gRPC")
    parser.add_argument("--model", default="apd-detector", help="served model name (default: apd-detector)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default: 8)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per request, at most 32 (default: 8)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default: 60)")
    parser.add_argument("--retry-errors", action="store_true", help="score again the sources whose row has an error")
    parser.set_defaults(func=predict)
