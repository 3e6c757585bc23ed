"""The integration tests' shared `apd serve` (one process for the whole session) and declaring files."""

from collections.abc import Iterator

import pytest

from tests.helpers.provenance_files import fixture_table, signing_ca
from tests.helpers.servers import ModelServer


@pytest.fixture(scope="session")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    """`apd serve` of the small detector (``tests.helpers.artifacts``, from ``mnt/models``: model version
    ``models-test``) with the test CA as trust anchor, so that files signed by it read as C2PA ``trusted``, and
    `apd explain` beside it, to which it forwards ``:explain``.

    Shared by every module that needs the default server: a test must not rely on counters starting at zero (diff
    ``/metrics`` before and after) nor change the server. Tests that need another server (workers, a broken model,
    the registry, a variant) start their own ``ModelServer``."""
    from tests.helpers.artifacts import detector_artifact  # torch: only when a test needs the server

    tmp = tmp_path_factory.mktemp("serving")
    (tmp / "anchors.pem").write_bytes(signing_ca().ca_pem)
    folder = str(detector_artifact(tmp / "mnt" / "models"))
    explainer = ModelServer(tmp, folder, command="explain")
    env = {
        "APD_PROVENANCE__TRUST_ANCHORS": str(tmp / "anchors.pem"),
        "APD_SERVING__EXPLAINER_HOST": f"127.0.0.1:{explainer.http}",  # :explain forwarded to `apd explain`
    }
    running = ModelServer(tmp, folder, env)
    yield running
    running.stop()
    explainer.stop()


@pytest.fixture(scope="session")
def declared() -> dict[str, bytes]:
    """Every file of ``tests.helpers.provenance_files.fixture_table`` by name (signed once a session)."""
    return fixture_table()
