"""``apd drift run``: the drift job (a CronJob's command, or by hand)."""

import argparse
from datetime import datetime

from components.cli.command import AddParser
from components.cli.exits import DriftAlertError
from components.common.settings import Settings


def drift_run(args: argparse.Namespace, settings: Settings) -> None:
    """``apd drift run``: the table of signals and the verdict; exit 3 when the alert fires, else 0."""
    from components.monitoring.job import drift_job, run_drift

    job = drift_job(
        settings,
        args.window_hours,
        args.pushgateway,
        model_version=args.model_version,
        alias=args.alias,
        endpoint=args.endpoint,
        start=args.start,
        end=args.end,
    )
    result = run_drift(job)
    print(result.to_text(job.settings))
    if result.alert:
        raise DriftAlertError(f"drift alert on {args.endpoint}")


def add_commands(add_parser: AddParser) -> None:
    drift = add_parser("drift", help="drift monitoring of the served model")
    run = drift.add_subparsers(dest="drift_command", required=True).add_parser(
        "run", help="compare the sink's live records with the model version's reference; exit 3 when the alert fires"
    )
    version = run.add_mutually_exclusive_group()
    version.add_argument("--model-version", help="registered model version (default: the one --alias points at)")
    version.add_argument("--alias", default="champion", help="registry alias (default: champion)")
    run.add_argument("--endpoint", default="default", help="InferenceService component: default or canary")
    run.add_argument("--window-hours", type=float, help="the last N hours (default: $APD_DRIFT__WINDOW_HOURS or 24)")
    run.add_argument("--start", type=datetime.fromisoformat, help="window start, ISO 8601 (UTC when no offset)")
    run.add_argument("--end", type=datetime.fromisoformat, help="window end, exclusive (default: now)")
    run.add_argument("--pushgateway", help="Pushgateway URL for the gauges (default: $APD_DRIFT__PUSHGATEWAY_URL)")
    run.set_defaults(func=drift_run)
