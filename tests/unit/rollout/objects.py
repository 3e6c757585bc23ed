"""InferenceServices as the API server returns them (the chart's, steady on model version 1, and with canaries),
and the model versions the test registry holds.
"""

import copy
from typing import Any

from components.rollout.plans import STABLE_URI_ANNOTATION, VERSION_ANNOTATION

NS, NAME, MODEL = "apd", "apd-detector", "apd-detector"
STABLE_URI = "s3://apd-mlflow/1/run-a/artifacts/detector"  # version 1
CANARY_URI = "s3://apd-mlflow/1/run-b/artifacts/detector"  # version 2
SOURCES = {
    "1": STABLE_URI,
    "2": CANARY_URI,
    "3": "mlflow-artifacts:/1/run-c/artifacts/detector",  # the MLflow server proxies artifacts
    "4": "/data/mlflow/artifacts/1/run-d/artifacts/detector",  # a local folder
}


def isvc(mode: str | None = "Serverless", **predictor: Any) -> dict[str, Any]:
    """The chart's InferenceService as the API server returns it, steady on model version 1."""
    annotations = {"serving.kserve.io/deploymentMode": mode} if mode else {}
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": NAME,
            "namespace": NS,
            "generation": 1,
            "resourceVersion": "4711",
            "uid": "5b1f4c0e-8d2a-4a51-9d43-0c7f2b5a9e10",
            "creationTimestamp": "2026-11-20T09:00:00Z",
            "annotations": annotations,
        },
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "maxReplicas": 3,
                "serviceAccountName": "apd-predictor",
                "model": {
                    "modelFormat": {"name": "apd-detector"},
                    "runtime": "apd-runtime",
                    "storageUri": STABLE_URI,
                    "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
                },
                **predictor,
            }
        },
    }


# A Serverless canary at 10 %, as KServe reports it: revision 00002 (version 2) beside the rolled-out 00001.
CANARY_STATUS: dict[str, Any] = {
    "address": {"url": "http://apd-detector.apd.svc.cluster.local"},
    "url": "http://apd-detector.apd.example.com",
    "deploymentMode": "Serverless",
    "observedGeneration": 2,
    "components": {
        "predictor": {
            "address": {"url": "http://apd-detector-predictor.apd.svc.cluster.local"},
            "url": "http://apd-detector-predictor.apd.example.com",
            "latestCreatedRevision": "apd-detector-predictor-00002",
            "latestReadyRevision": "apd-detector-predictor-00002",
            "latestRolledoutRevision": "apd-detector-predictor-00001",
            "traffic": [
                {
                    "latestRevision": True,
                    "percent": 10,
                    "revisionName": "apd-detector-predictor-00002",
                    "tag": "latest",
                    "url": "http://latest-apd-detector-predictor.apd.example.com",
                },
                {
                    "latestRevision": False,
                    "percent": 90,
                    "revisionName": "apd-detector-predictor-00001",
                    "tag": "prev",
                    "url": "http://prev-apd-detector-predictor.apd.example.com",
                },
            ],
        }
    },
    "conditions": [
        {"lastTransitionTime": "2026-11-21T10:02:11Z", "status": "True", "type": "IngressReady"},
        {"lastTransitionTime": "2026-11-21T10:02:09Z", "status": "True", "type": "LatestDeploymentReady"},
        {"lastTransitionTime": "2026-11-21T10:02:09Z", "status": "True", "type": "PredictorConfigurationReady"},
        {"lastTransitionTime": "2026-11-21T10:02:11Z", "status": "True", "type": "PredictorReady"},
        {"lastTransitionTime": "2026-11-21T10:02:11Z", "status": "True", "type": "PredictorRouteReady"},
        {"lastTransitionTime": "2026-11-21T10:02:11Z", "status": "True", "type": "Ready"},
    ],
    "modelStatus": {
        "copies": {"failedCopies": 0, "totalCopies": 1},
        "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
        "transitionStatus": "UpToDate",
    },
}


def serverless_canary(percent: int = 10) -> dict[str, Any]:
    """A Serverless InferenceService with a canary of version 2 at ``percent``, started by apd rollout."""
    obj = isvc("Serverless", canaryTrafficPercent=percent)
    obj["spec"]["predictor"]["model"]["storageUri"] = CANARY_URI
    obj["metadata"]["annotations"] |= {VERSION_ANNOTATION: "2", STABLE_URI_ANNOTATION: STABLE_URI}
    obj["status"] = copy.deepcopy(CANARY_STATUS)
    return obj


def renamed(obj: dict[str, Any], name: str, namespace: str = NS) -> dict[str, Any]:
    """``obj`` under another name and namespace."""
    obj = copy.deepcopy(obj)
    obj["metadata"] |= {"name": name, "namespace": namespace}
    return obj


def with_explainer(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with the chart's explainer component on the model its predictor names (and, Serverless, the same
    canaryTrafficPercent), as the chart renders it and the rollouts keep it."""
    obj = copy.deepcopy(obj)
    predictor = obj["spec"]["predictor"]
    container = {
        "name": "kserve-container",
        "image": "apd-components:0.1.0",
        "command": ["apd"],
        "args": ["explain", "--model_name", MODEL, "--model_uri", "/mnt/models", "--http_port", "8080"],
        "env": [
            {"name": "STORAGE_URI", "value": predictor["model"]["storageUri"]},
            {"name": "OMP_NUM_THREADS", "value": "2"},
        ],
        "resources": {"requests": {"cpu": "500m", "memory": "1536Mi"}, "limits": {"cpu": "2", "memory": "3Gi"}},
    }
    explainer: dict[str, Any] = {"serviceAccountName": "apd-predictor", "minReplicas": 0, "containers": [container]}
    if "canaryTrafficPercent" in predictor:
        explainer["canaryTrafficPercent"] = predictor["canaryTrafficPercent"]
    obj["spec"]["explainer"] = explainer
    return obj


def explainer_uri(obj: dict[str, Any]) -> str:
    """The STORAGE_URI of ``obj``'s explainer."""
    [env] = [e for e in obj["spec"]["explainer"]["containers"][0]["env"] if e["name"] == "STORAGE_URI"]
    return str(env["value"])


def standard_canary(percent: int = 10) -> dict[str, Any]:
    """A Standard InferenceService with canary v2 at ``percent``, as apd rollout writes it."""
    obj = isvc("Standard")
    model = {"name": "kserve-container", **obj["spec"]["predictor"]["model"], "storageUri": CANARY_URI}
    obj["spec"]["canary"] = [{"trafficPercent": percent, "predictor": {"name": "v2", "model": model}}]
    return obj
