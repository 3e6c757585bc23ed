"""Reading an S3 object whole (against a fake of the minio client; a real S3 server is in tests/integration): the
connection goes back to the pool whatever happens, and which failures are the store's rather than the object's."""

import pytest
from minio.error import S3Error, ServerError
from urllib3.exceptions import ProtocolError
from urllib3.response import HTTPResponse

from components.common.s3 import S3_ERRORS, is_transient, read_object


class FakeResponse:
    """A minio object response: it may break mid-read, and records whether it was closed and its connection
    released."""

    def __init__(self, data: bytes, fails: Exception | None = None) -> None:
        self.data, self.fails = data, fails
        self.closed = self.released = False

    def read(self) -> bytes:
        if self.fails is not None:
            raise self.fails
        return self.data

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        self.released = True


class FakeClient:
    """The one call of the minio client that read_object makes, over one object."""

    def __init__(self, response: FakeResponse) -> None:
        self.response = response
        self.asked: list[tuple[str, str]] = []

    def get_object(self, bucket: str, key: str, request_headers: dict[str, str] | None = None) -> FakeResponse:
        self.asked.append((bucket, key))
        return self.response


def _s3_error(code: str, status: int) -> S3Error:
    return S3Error(HTTPResponse(status=status), code, f"{code} message", "/photos/a.jpg", "request", "host")


def test_an_object_is_read_whole_and_its_connection_released() -> None:
    client = FakeClient(FakeResponse(b"jpeg bytes"))
    assert read_object(client, "photos", "shop/a.jpg") == b"jpeg bytes"
    assert client.asked == [("photos", "shop/a.jpg")]
    assert (client.response.closed, client.response.released) == (True, True)


def test_a_read_that_breaks_still_releases_the_connection() -> None:
    client = FakeClient(FakeResponse(b"", fails=ProtocolError("connection reset mid-read")))
    with pytest.raises(S3_ERRORS, match="connection reset mid-read"):
        read_object(client, "photos", "shop/a.jpg")
    assert (client.response.closed, client.response.released) == (True, True)


@pytest.mark.parametrize(
    ("failure", "transient"),
    [
        (ProtocolError("connection reset"), True),  # the connection, not the object
        (ServerError("503 from a proxy", 503), True),  # an answer that is not S3's
        (_s3_error("NoSuchKey", 404), False),  # the object
        (_s3_error("AccessDenied", 403), False),
    ],
)
def test_failures_of_the_store_are_transient_and_those_of_the_object_are_not(
    failure: Exception, transient: bool
) -> None:
    assert isinstance(failure, S3_ERRORS)
    assert is_transient(failure) is transient
