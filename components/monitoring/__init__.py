"""The drift job: the live records of the payload sink against the served model version's reference statistics.

Inputs: the records the sink wrote for one model version and endpoint (``default`` or ``canary``) in a window,
``s3://<sink bucket>/<sink prefix>/date=YYYY-MM-DD/model=<name>/version=<v>/part-*.parquet`` (records with a
decode error or without a paired response are left out and counted), and ``reference.parquet`` + ``config.json``
of that version's registry artifact (the validation images: the same features, the model's predictions).

Signals:
- feature drift: Evidently's DataDriftPreset over the numeric features and the image format (share of drifted
  columns, dataset drift, a score and a detected flag per feature);
- prediction drift: the mean probability shift (current - reference), the low-confidence ratio and the
  ai_generated ratio (current vs reference), Evidently's ValueDrift on the probability, and ``confidence_drop``:
  the relative fall of the mean margin to the threshold (``ArtifactConfig.margin``) from reference to current;
- provenance: the share of images whose own file declares AI origin (C2PA, IPTC, generator metadata), reported but
  never alerted on: a floor under the pixel model's ai_generated ratio, and stripped metadata proves nothing.

An alert fires when any one of the thresholds in ``DriftSettings`` is passed; fewer usable records than
``min_records`` give no verdict. Outputs: Evidently's HTML report and a JSON summary on S3
(``drift/<model>/<version>/<endpoint>/<window end>/``), an MLflow run in the ``apd-drift`` experiment with the
metrics and both files, and Prometheus gauges pushed to a Pushgateway.

No sampling: Evidently takes 100,000 records with all 11 columns in a few seconds on 2 cores
(``tests/bench/bench_drift.py``).

One idea per module, each depending only on those above it:

- ``records``: reading the sink's records of a window from S3;
- ``signals``: the Evidently report, the signals and the alert rules (the verdict on one window);
- ``result``: one run's result and its table;
- ``publish``: the Pushgateway gauges (the one table of their names), the MLflow run, report.html and summary.json
  on S3;
- ``job``: ``run_drift``, one drift run end to end (``apd drift run``, the KFP ``drift`` step in
  ``components/drift.py``, the incident drill).
"""
