"""The drift incident drill (``make incident``): a new image generator appears, the detector drifts, the drift job
raises the alert, a retrained model recovers.

Everything runs embedded on this machine, with the real pieces: the registered champion behind ``apd serve``
(KServe's ModelServer), the payload sink ``apd sink`` writing to an S3 server on loopback (moto), the drift job
(``components.monitoring.job.run_drift``: Evidently, MLflow, a Pushgateway when Debian's ``prometheus-pushgateway`` is
installed) and the training pipeline under KFP's local runner. Without a cluster there is no KServe logger, so
the drill plays its part: every request it sends to the model server is then posted to the sink as the two
binary-mode CloudEvents (request, response) that KServe's logger would send.

1. before: traffic like the data the model was validated on: fresh crops (never seen in training or validation) of
   the validation split's photos, with their twins from the demo's default mix of Real-ESRGAN recipes, the
   generators the model was trained on
2. during: the same real crops, but their generated twins now come from a generator the model never saw
   (``NEW_GENERATOR``: another network, at another scale, see ``demo_data.GENERATORS``); the drift job runs after
   every chunk of traffic until it alerts (time to detection, in seconds and requests)
3. after: the new generator's images (other crops of the same photos) are ingested next to the old dataset, the
   pipeline fine-tunes the champion on both and registers a new version, which serves the same new traffic.

Prints a before / during / after table: accuracy, false negative rate, drift signals, alert, time to detection.

The package, one idea a module: ``drill`` (the phases above and ``main``), ``harness`` (the processes on loopback),
``traffic`` (the traffic and the stand-in for KServe's logger), ``retrain`` (the pipeline run of phase 3),
``registry`` (the champion alias), ``report`` (the scores and the table).
"""
