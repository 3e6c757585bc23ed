"""Source expansion: folders, ZIP archives, URL lists, files and URLs given directly, and the sources that say
why they cannot be read."""

import re
import zipfile
from pathlib import Path

import pytest

from components.batch.sources import expand_sources
from components.common.errors import DataSourceError


def test_a_folder_is_every_visible_file_below_it_sorted(tmp_path: Path) -> None:
    for name in ("b.jpg", "a/c.png", "a/d/e.webp", ".hidden.jpg", ".cache/f.jpg", "notes.txt.bak"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    items = expand_sources([str(tmp_path)])
    assert [Path(i.source).relative_to(tmp_path).as_posix() for i in items] == [
        "a/c.png",
        "a/d/e.webp",
        "b.jpg",
        "notes.txt.bak",  # not an image: the server says so in its row
    ]
    assert items[0].load(10) == b"x"


def test_a_zip_is_its_file_members(tmp_path: Path) -> None:
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("shop/a.jpg", b"jpeg bytes")
        zf.writestr("shop/", b"")  # a folder entry
        zf.writestr("__MACOSX/shop/._a.jpg", b"resource fork")
        zf.writestr("b.png", b"png bytes")
    items = expand_sources([str(archive)])
    assert [i.source for i in items] == [f"{archive}!shop/a.jpg", f"{archive}!b.png"]
    assert [i.load(100) for i in items] == [b"jpeg bytes", b"png bytes"]
    assert items[0].size == len(b"jpeg bytes")


def test_a_url_list_is_its_urls(tmp_path: Path) -> None:
    urls = tmp_path / "urls.txt"
    urls.write_text("# catalogue\nhttp://shop.example/a.jpg\n\n  https://cdn.example/b.png  \n")
    items = expand_sources([str(urls), "https://cdn.example/c.webp"])
    assert [i.source for i in items] == [
        "http://shop.example/a.jpg",
        "https://cdn.example/b.png",
        "https://cdn.example/c.webp",  # a URL given directly
    ]
    assert all(i.size is None for i in items)


def test_files_are_themselves_and_each_source_counts_once(tmp_path: Path) -> None:
    one, two = tmp_path / "one.jpg", tmp_path / "two.png"
    one.write_bytes(b"1")
    two.write_bytes(b"22")
    items = expand_sources([str(one), str(two), str(one)])
    assert [(i.source, i.size) for i in items] == [(str(one), 1), (str(two), 2)]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("ftp://shop.example/a.jpg\n", "urls.txt:1: 'ftp://shop.example/a.jpg' is not an http(s) URL"),  # scheme
        ("http://ok.example/a.jpg\nphoto.jpg\n", "urls.txt:2: 'photo.jpg' is not an http(s) URL"),  # a path
    ],
)
def test_a_bad_line_in_a_url_list_names_the_line(tmp_path: Path, content: str, says: str) -> None:
    (tmp_path / "urls.txt").write_text(content)
    with pytest.raises(DataSourceError, match=re.escape(says)):
        expand_sources([str(tmp_path / "urls.txt")])


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("missing/folder", "no such file or folder"),  # a typo
        ("s3://bucket/prefix", "S3 sources need S3 settings"),  # no S3 settings given
    ],
)
def test_bad_sources_say_why(source: str, says: str) -> None:
    with pytest.raises(DataSourceError, match=says):
        expand_sources([source])


def test_a_broken_zip_is_a_source_error(tmp_path: Path) -> None:
    (tmp_path / "broken.zip").write_bytes(b"PK not really")
    with pytest.raises(DataSourceError, match="not a readable ZIP archive"):
        expand_sources([str(tmp_path / "broken.zip")])
