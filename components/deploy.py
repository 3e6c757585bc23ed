"""The pipeline's deploy step: a canary of the registered model version on the KServe InferenceService.

The rollout itself (plans per deployment mode, the Kubernetes calls) lives in ``components.rollout``, which
``apd rollout`` uses too.
"""

from components.stage import stage


@stage
def deploy(model_version: str, canary_percent: int = 0, isvc_name: str = "apd-detector", namespace: str = "") -> str:
    """Start a canary of the registered model version on the KServe InferenceService (``apd rollout canary``).

    Args:
        model_version: The registered model version to roll out (the register step's output).
        canary_percent: Share of requests (percent, 0-100) the new version gets; 0 rolls nothing out and says so.
        isvc_name: The InferenceService to patch, in the step's cluster.
        namespace: Its namespace; empty: APD_DEPLOY__NAMESPACE, else the step pod's own namespace.

    Returns:
        One line: the fields the patch changed (before -> after), or why nothing was rolled out.
    """
    from components.common.logging import configure_logging
    from components.common.settings import Settings
    from components.common.tracking import setup_tracking
    from components.rollout import kube_api, rollout

    settings = Settings()
    configure_logging(settings.logging)
    if canary_percent == 0:
        summary = f"canary_percent is 0: model version {model_version} stays registered, not rolled out"
        print(summary)
        return summary
    setup_tracking(settings.mlflow)
    api, pod_namespace = kube_api()
    result = rollout(
        "canary",
        api,
        namespace or settings.deploy.namespace or pod_namespace,
        isvc_name,
        settings.deploy.default_mode,
        percent=canary_percent,
        model_name=settings.mlflow.model_name,
        model_version=model_version,
    )
    print(result.text())
    return result.summary
