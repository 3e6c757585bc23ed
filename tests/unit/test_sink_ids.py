"""The payload sink's written ids (``serving/sink_ids.py``): the events already on S3, across restarts."""

from pathlib import Path

from serving.sink_ids import WrittenIds


def test_written_ids_persist_and_stay_bounded(tmp_path: Path) -> None:
    ids = WrittenIds(tmp_path, capacity=1000)
    ids.add([f"k{i}" for i in range(1500)])
    ids.close()
    again = WrittenIds(tmp_path, capacity=1000)
    assert "k1499" in again
    assert "k0" not in again
    assert len((tmp_path / "written.ids").read_text().splitlines()) == 1000  # compacted on start
    again.close()


def test_written_ids_file_is_compacted_while_running(tmp_path: Path) -> None:
    ids = WrittenIds(tmp_path, capacity=10)
    ids.add([f"a{i}" for i in range(15)])
    assert len((tmp_path / "written.ids").read_text().splitlines()) == 15  # up to twice the capacity: appended
    assert "a4" not in ids
    assert "a5" in ids
    ids.add([f"b{i}" for i in range(6)])  # 21 lines: rewritten with the newest 10
    assert (tmp_path / "written.ids").read_text().splitlines() == [f"a{i}" for i in range(11, 15)] + [
        f"b{i}" for i in range(6)
    ]
    ids.add(["c"])
    assert (tmp_path / "written.ids").read_text().splitlines()[-2:] == ["b5", "c"]  # appended to the compacted file
    ids.close()
    again = WrittenIds(tmp_path, capacity=10)
    assert "c" in again
    assert "b0" in again
    assert "a11" not in again  # the 11th newest
    again.close()
