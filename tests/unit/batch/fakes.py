"""What the batch unit tests share: a fake of the served model and retries that do not wait."""

from collections.abc import Sequence

from components.batch.client import RejectedError
from components.batch.failures import Retry, TransientError
from components.common.protocol import Answer

FAST = Retry(attempts=3, backoff_seconds=0.001, max_backoff_seconds=0.002)


class FakeScorer:
    """A fake of the served model (the real one runs in tests/integration): probability = first byte / 255; it rejects
    any request holding an image that starts with b"bad" (as the server answers 400 for the whole request), fails the
    first ``flaky`` calls with a transient error, and records every request."""

    def __init__(self, flaky: int = 0, unavailable: bool = True, server_error_on: bytes | None = None) -> None:
        self.requests: list[list[bytes]] = []
        self.flaky, self.unavailable, self.server_error_on = flaky, unavailable, server_error_on

    def ready(self) -> bool:
        return True

    def score(self, images: Sequence[bytes]) -> list[Answer]:
        self.requests.append(list(images))
        if self.flaky:
            self.flaky -= 1
            raise TransientError("connection refused", unavailable=self.unavailable)
        if self.server_error_on is not None and any(i.startswith(self.server_error_on) for i in images):
            raise TransientError("server error 500: boom", unavailable=False)
        for index, image in enumerate(images):
            if image.startswith(b"bad"):
                raise RejectedError(f"image[{index}] is not a recognised image")
        return [Answer(round(i[0] / 255, 6), "real", "high", "7") for i in images]
