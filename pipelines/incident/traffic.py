"""The drill's traffic and its stand-in for KServe's payload logger: images to the model server over v2 REST, each
exchange posted to the sink as the two binary-mode CloudEvents (request, response) that the logger would send."""

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from components.common import protocol
from pipelines.incident.harness import http
from serving.sink_events import REQUEST_TYPE, RESPONSE_TYPE

BATCH = 8  # images per inference request
Image = tuple[Path, str]  # file, true label


def labelled(root: Path, splits: tuple[str, ...], labels: tuple[str, ...] = ("real", "ai_generated")) -> list[Image]:
    """(file, label) for every JPEG under ``root/<split>/<label>``, in a stable order."""
    return [(p, label) for split in splits for label in labels for p in sorted((root / split / label).rglob("*.jpg"))]


def interleave(images: list[Image]) -> list[Image]:
    """Real and generated alternate, as they would in live traffic (a stable order: the drill is repeatable)."""
    real = [i for i in images if i[1] == "real"]
    fake = [i for i in images if i[1] != "real"]
    out: list[Image] = []
    for k in range(max(len(real), len(fake))):
        out += real[k : k + 1] + fake[k : k + 1]
    return out


class Traffic:
    """Sends images to the model server over v2 REST and logs each exchange to the sink as KServe's logger does."""

    def __init__(self, server: str, sink: str, model: str) -> None:
        self.server, self.sink, self.model = server, sink, model

    def send(self, images: list[Image], endpoint: str = "default") -> list[tuple[str, str]]:
        """(true label, predicted label) per image."""
        pairs = []
        for start in range(0, len(images), BATCH):
            batch = images[start : start + BATCH]
            request_id = str(uuid.uuid4())
            body = json.dumps(protocol.v2_request([path.read_bytes() for path, _ in batch], request_id)).encode()
            response = http(f"{self.server}/v2/models/{self.model}/infer", body, {})
            for kind, payload in ((REQUEST_TYPE, body), (RESPONSE_TYPE, response)):
                http(self.sink, payload, self._cloudevent(request_id, kind, endpoint))
            labels = next(o for o in json.loads(response)["outputs"] if o["name"] == "label")["data"]
            pairs += [(truth, predicted) for (_, truth), predicted in zip(batch, labels, strict=True)]
        return pairs

    def _cloudevent(self, request_id: str, kind: str, endpoint: str) -> dict[str, str]:
        return {
            "ce-id": request_id,
            "ce-type": kind,
            "ce-specversion": "1.0",
            "ce-source": f"http://localhost/{self.model}-predictor",
            "ce-time": datetime.now(UTC).isoformat(),
            "ce-inferenceservicename": self.model,
            "ce-namespace": "drill",
            "ce-endpoint": endpoint,
            "ce-component": "predictor",
        }


def settled(sink: str, expected_records: int, seconds: float = 120) -> None:
    """Wait until the sink has written ``expected_records`` records in all and holds nothing unwritten."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = http(f"{sink}/metrics").decode()
        values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("apd_sink")}
        backlog = values.get("apd_sink_wal_events", 0)
        if values.get("apd_sink_records_written_total", 0) >= expected_records and not backlog:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the sink did not write {expected_records} records in {seconds:.0f} s")
