"""``apd rollout canary | promote | rollback | status``: a registered model version out to the InferenceService."""

import argparse

from components.cli.command import AddParser
from components.common.settings import Settings


def rollout_action(args: argparse.Namespace, settings: Settings) -> None:
    """``apd rollout ACTION``: a ``DeployError`` (exit 1, the reason on stderr) when it cannot be done."""
    from components.rollout import kube_api, rollout, rollout_status

    deploy = settings.deploy
    api, context_namespace = kube_api()
    namespace = args.namespace or deploy.namespace or context_namespace
    name = args.isvc or deploy.isvc_name
    if args.rollout_command == "status":
        print(rollout_status(api, namespace, name, deploy.default_mode))
        return
    version = getattr(args, "version", None)
    percent = getattr(args, "percent", None)
    if version is not None:
        from components.common.tracking import setup_tracking

        setup_tracking(settings.mlflow)
        percent = deploy.canary_percent if percent is None else percent
    result = rollout(
        args.rollout_command,
        api,
        namespace,
        name,
        deploy.default_mode,
        percent=percent,
        model_name=settings.mlflow.model_name,
        model_version=version,
        restore=getattr(args, "restore", False),
        dry_run=args.dry_run,
    )
    print(result.text())


def add_commands(add_parser: AddParser) -> None:
    parser = add_parser("rollout", help="roll a registered model version out to KServe as a canary")
    rollout_commands = parser.add_subparsers(dest="rollout_command", required=True)
    start = rollout_commands.add_parser("canary", help="start a canary of --version, or change the running one's share")
    start.add_argument("--version", help="registered model version (MLflow); omit to keep the running canary's model")
    start.add_argument(
        "--percent", type=int, help="share of requests for the canary, 0-100 (with --version default: 10)"
    )
    promote = rollout_commands.add_parser("promote", help="send all traffic to the canary; it becomes the stable model")
    rollback = rollout_commands.add_parser("rollback", help="send all traffic back to the stable model")
    rollback.add_argument(
        "--restore", action="store_true", help="Serverless: also put the stable model's storageUri back in spec"
    )
    status = rollout_commands.add_parser("status", help="models, revisions and traffic split of the InferenceService")
    for sub in (start, promote, rollback, status):
        sub.add_argument("--isvc", help="InferenceService name (default: $APD_DEPLOY__ISVC_NAME or apd-detector)")
        sub.add_argument(
            "-n", "--namespace", help="its namespace (default: $APD_DEPLOY__NAMESPACE, else the kubeconfig context's)"
        )
        sub.set_defaults(func=rollout_action, dry_run=False)
    for sub in (start, promote, rollback):
        sub.add_argument("--dry-run", action="store_true", help="print the patch without sending it")
