"""The payload sink's write-ahead log (``serving/sink_wal.py``): group commit, replay, torn records, segments."""

import asyncio
from pathlib import Path
from typing import Any

import pytest

import serving.sink_wal
from serving.sink_wal import WalRef, WalUnavailableError, WriteAheadLog


def _wal_roundtrip(folder: Path, bodies: list[bytes]) -> list[WalRef]:
    async def write() -> list[WalRef]:
        wal = WriteAheadLog(folder, lambda ref, item: None)
        refs = await asyncio.gather(*(wal.append(b"{}", body, None) for body in bodies))  # one group commit
        await wal.close()
        return list(refs)

    return asyncio.run(write())


def test_wal_replays_every_record_and_skips_a_torn_tail(tmp_path: Path) -> None:
    bodies = [f"event {i}".encode() * (i + 1) for i in range(5)]
    refs = _wal_roundtrip(tmp_path, bodies)
    assert len({r.segment for r in refs}) == 1
    segment = next(tmp_path.glob("wal-*.log"))
    segment.write_bytes(segment.read_bytes()[:-3])  # the last record was being written when the process died
    wal = WriteAheadLog(tmp_path, lambda ref, item: None)
    replayed = list(wal.replay())
    assert [body for _, _, body in replayed] == bodies[:-1]
    assert wal.read(replayed[1][0]) == (b"{}", bodies[1])
    for ref, _, _ in replayed:
        wal.release(ref)
    assert not list(tmp_path.glob("wal-*.log"))  # everything on S3: the segment is gone


def test_a_record_is_committed_even_when_its_caller_stopped_waiting(tmp_path: Path) -> None:
    committed: list[tuple[WalRef, Any]] = []

    async def write() -> None:
        wal = WriteAheadLog(tmp_path, lambda ref, item: committed.append((ref, item)))
        first = asyncio.create_task(wal.append(b"{}", b"first", "a"))
        second = asyncio.create_task(wal.append(b"{}", b"second", "b"))
        await asyncio.sleep(0)  # both are queued for one write
        first.cancel()  # e.g. the client went away
        assert (await second).segment == committed[1][0].segment
        assert first.cancelled()
        await wal.close()

    asyncio.run(write())
    assert [item for _, item in committed] == ["a", "b"]  # in log order, the abandoned one too
    replayed = list(WriteAheadLog(tmp_path, lambda ref, item: None).replay())
    assert [(ref, body) for ref, _, body in replayed] == [(committed[0][0], b"first"), (committed[1][0], b"second")]


def test_a_failed_write_is_refused_and_the_log_goes_on_in_a_fresh_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    committed: list[Any] = []
    write_durably = serving.sink_wal._write_durably

    def disk_full_once(fd: int, data: bytes, start: int) -> None:
        monkeypatch.setattr(serving.sink_wal, "_write_durably", write_durably)
        raise OSError(28, "No space left on device")

    async def write() -> tuple[WalRef, WalRef]:
        wal = WriteAheadLog(tmp_path, lambda ref, item: committed.append(item))
        first = await wal.append(b"{}", b"before", "before")
        monkeypatch.setattr(serving.sink_wal, "_write_durably", disk_full_once)
        with pytest.raises(WalUnavailableError, match="No space left"):
            await wal.append(b"{}", b"lost", "lost")
        after = await wal.append(b"{}", b"after", "after")
        assert wal.events == 2
        await wal.close()
        return first, after

    first, after = asyncio.run(write())
    assert committed == ["before", "after"]  # a refused event is not handed on
    assert after.segment == first.segment + 1
    replayed = list(WriteAheadLog(tmp_path, lambda ref, item: None).replay())
    assert [body for _, _, body in replayed] == [b"before", b"after"]


def test_maintain_deletes_an_idle_segment_once_its_events_are_on_s3(tmp_path: Path) -> None:
    async def write() -> None:
        wal = WriteAheadLog(tmp_path, lambda ref, item: None)
        ref = await wal.append(b"{}", b"event", None)
        wal.maintain()  # its event is not on S3 yet: the segment stays
        assert list(tmp_path.glob("wal-*.log"))
        wal.release(ref)
        assert list(tmp_path.glob("wal-*.log"))  # still the active segment
        wal.maintain()
        assert not list(tmp_path.glob("wal-*.log"))
        assert wal.events == 0
        await wal.close()

    asyncio.run(write())
