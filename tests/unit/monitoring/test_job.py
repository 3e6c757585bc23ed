"""The drift job's window."""

from datetime import UTC, datetime

import pytest

from components.monitoring.job import window


def test_the_window() -> None:
    end = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
    start, stop = window(24, end=end)
    assert (start, stop) == (datetime(2026, 11, 1, 6, 0, tzinfo=UTC), end)
    assert window(1, datetime(2026, 1, 1), datetime(2026, 1, 1, 2))[0].tzinfo == UTC  # naive = UTC
    with pytest.raises(ValueError, match="not before its end"):
        window(1, end, end)
