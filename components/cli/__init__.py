"""``apd``: the AI Product-photo Detector command line.

    apd data demo                      build (or reuse) the offline demo dataset under data/demo
    apd ingest SOURCE --out DIR        ingest a labelled image collection into a versioned dataset
    apd validate DIR                   validate an ingested dataset (exit 1 when it fails)
    apd pipeline run --local --source SOURCE [-p epochs=3 ...]
                                       run the pipeline with KFP's local runner
    apd pipeline compile               write pipelines/training.yaml and batch.yaml for the Kubeflow UI
    apd serve [--model_uri URI] [KServe ModelServer flags]
                                       serve a registered model with KServe (v1/v2 REST, v2 gRPC)
    apd sink [--port 8080] [--host 0.0.0.0]
                                       receive KServe's payload-logger events, write Parquet records to S3
    apd ui [--port 8090] [--model-url URL] [--compare-url URL]
                                       the moderators' web page: drop an image, see the served model's verdict
    apd pipeline submit --host URL --source SOURCE [--schedule CRON]
                                       start a run (or a recurring run) on Kubeflow Pipelines
    apd rollout canary --version N [--percent 10] | canary --percent 50 | promote | rollback [--restore] | status
                                       roll a registered model version out to the KServe InferenceService
    apd drift run [--model-version V | --alias champion] [--endpoint default] [--window-hours 24] [--pushgateway URL]
                                       compare live records with the model's reference (exit 3: drift alert)
    apd predict SOURCE... --out results.csv [--url http://127.0.0.1:8080] [--protocol rest|grpc]
                                       score images (files, folders, ZIPs, s3://, URL lists) with the served model

Configuration comes from ``APD_*`` environment variables (see ``components/common/settings.py``).

One module per area (``data``, ``pipeline``, ``serving``, ``batch``, ``rollout``, ``monitoring``) adds its commands
and holds their handlers (``command.py`` says what an area gives); ``dispatch.py`` builds the parser from them and
runs the handler; ``exits.py`` is the one table from what a handler raised to the exit code and the stderr line.
"""

from components.cli.dispatch import build_parser, main

__all__ = ["build_parser", "main"]
