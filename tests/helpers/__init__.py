"""What the tests share, one idea a module: real image files (``images``), files that declare their origin under a
test CA (``provenance_files``), a small real detector artifact and its registration in a local MLflow
(``artifacts``), loopback ports and waiting for a server (``net``), the local servers the integration tests start
(``servers``), the KServe logger's CloudEvents with the v1/v2 bodies they carry (``events``), and logged records in
the payload sink's Parquet layout on S3 (``sink_records``). Test modules import from here (or from a fixture module
next to them), never from another test module."""
