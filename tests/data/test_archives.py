"""safe_extract and archive validation: every escape is refused and nothing is written."""

from __future__ import annotations

import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from skiplab.data import safe_extract
from skiplab.data.archives import validate_tar, validate_zip
from skiplab.selftest.archives import tar_info as _info
from skiplab.selftest.archives import write_tar as _tar
from skiplab.selftest.archives import write_zip as _zip
from tests.data._fixtures import add_tar_member, snapshot


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "archives").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("existing file beside the destination")
    return tmp_path


GOOD = [
    (_info("a", tarfile.DIRTYPE), b""),
    (_info("a/b.txt"), b"hello"),
    (_info("./c.txt"), b"world"),
]


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_tar_extracts_all_members(work: Path, suffix: str):
    archive = _tar(work / "archives" / f"good{suffix}", GOOD)
    dest = safe_extract(archive, work / "out" / "x")
    assert (dest / "a" / "b.txt").read_bytes() == b"hello"
    assert (dest / "c.txt").read_bytes() == b"world"
    assert snapshot(work / "out") == sorted(
        [("keep.txt", 36), ("x", 0), ("x/a", 0), ("x/a/b.txt", 5), ("x/c.txt", 5)]
    )


def test_zip_extracts_all_members(work: Path):
    archive = _zip(
        work / "archives" / "good.zip",
        [("d/", b"", stat.S_IFDIR | 0o755), ("d/e.txt", b"zip!", stat.S_IFREG | 0o644)],
    )
    dest = safe_extract(archive, work / "out" / "z")
    assert (dest / "d" / "e.txt").read_bytes() == b"zip!"


TAR_ATTACKS = {
    "absolute path": [(_info("/tmp/skiplab_evil.txt"), b"x")],
    "dot-dot": [(_info("ok.txt"), b"fine"), (_info("sub/../../evil.txt"), b"x")],
    "symlink out, then written through": [
        (_info("link", tarfile.SYMTYPE, "/tmp"), b""),
        (_info("link/skiplab_evil.txt"), b"x"),
    ],
    "hard link to an outside path": [(_info("passwd", tarfile.LNKTYPE, "/etc/passwd"), b"")],
    "link to the destination itself": [(_info("self", tarfile.SYMTYPE, "."), b"")],
    "device file": [(_info("dev", tarfile.CHRTYPE), b"")],
    "FIFO": [(_info("pipe", tarfile.FIFOTYPE), b"")],
    "backslash name": [(_info("..\\evil.txt"), b"x")],
    "duplicate name": [(_info("same.txt"), b"1"), (_info("same.txt"), b"2")],
    "file used as a folder": [(_info("f"), b"1"), (_info("f/g.txt"), b"2")],
}
REFUSED_NAME = {
    "absolute path": "/tmp/skiplab_evil.txt",
    "dot-dot": "sub/../../evil.txt",
    "symlink out, then written through": "link",
    "hard link to an outside path": "passwd",
    "link to the destination itself": "self",
    "device file": "dev",
    "FIFO": "pipe",
    "backslash name": "..\\\\evil.txt",
    "duplicate name": "same.txt",
    "file used as a folder": "f/g.txt",
}


@pytest.mark.parametrize("case", list(TAR_ATTACKS))
def test_tar_attack_refused_and_nothing_written(work: Path, case: str):
    archive = _tar(work / "archives" / "evil.tar", TAR_ATTACKS[case])
    before = snapshot(work)
    with pytest.raises(ValueError, match=rf"refusing archive .*{REFUSED_NAME[case]}"):
        safe_extract(archive, work / "out" / "x")
    assert snapshot(work) == before
    assert not Path("/tmp/skiplab_evil.txt").exists()
    # Reading without extraction (image folders, CIFAR) uses the same check.
    with tarfile.open(archive) as tf, pytest.raises(ValueError, match="refusing archive"):
        validate_tar(tf, archive)


def test_link_to_destination_itself_by_absolute_path(work: Path):
    dest = work / "out" / "x"
    archive = _tar(
        work / "archives" / "evil.tar",
        [(_info("ok.txt"), b"fine"), (_info("loop", tarfile.SYMTYPE, str(dest)), b"")],
    )
    before = snapshot(work)
    with pytest.raises(ValueError, match="member 'loop' is a symbolic link"):
        safe_extract(archive, dest)
    assert snapshot(work) == before


def test_refusal_comes_before_any_write_even_late_in_the_archive(work: Path):
    # A valid first member is not written when a later member is refused.
    archive = _tar(work / "archives" / "late.tar", [(_info("first.txt"), b"ok")])
    add_tar_member(archive, _info("zzz", tarfile.SYMTYPE, "/etc"))
    before = snapshot(work)
    with pytest.raises(ValueError, match="'zzz' is a symbolic link"):
        safe_extract(archive, work / "out" / "x")
    assert snapshot(work) == before


ZIP_ATTACKS = {
    "dot-dot": ([("../x", b"evil", stat.S_IFREG | 0o644)], "../x"),
    "absolute": ([("/abs.txt", b"evil", stat.S_IFREG | 0o644)], "/abs.txt"),
    "symlink": ([("ln", b"/etc/passwd", stat.S_IFLNK | 0o777)], "ln"),
    "drive letter": ([("C:/evil.txt", b"evil", 0)], "C:/evil.txt"),
}


@pytest.mark.parametrize("case", list(ZIP_ATTACKS))
def test_zip_attack_refused_and_nothing_written(work: Path, case: str):
    members, name = ZIP_ATTACKS[case]
    archive = _zip(work / "archives" / "evil.zip", [("ok.txt", b"fine", 0)] + members)
    before = snapshot(work)
    with pytest.raises(ValueError, match=rf"refusing archive .*member '{name}'"):
        safe_extract(archive, work / "out" / "x")
    assert snapshot(work) == before
    with zipfile.ZipFile(archive) as zf, pytest.raises(ValueError, match=name):
        validate_zip(zf, archive)


def test_destination_must_be_new_or_empty(work: Path):
    archive = _tar(work / "archives" / "good.tar", [(_info("c.txt"), b"world")])
    with pytest.raises(ValueError, match="must be new or an empty folder"):
        safe_extract(archive, work / "out")  # holds keep.txt
    (work / "out" / "empty").mkdir()
    assert (safe_extract(archive, work / "out" / "empty") / "c.txt").read_bytes() == b"world"


def test_unknown_archive_type(work: Path):
    path = work / "archives" / "data.rar"
    path.write_bytes(b"Rar!")
    with pytest.raises(ValueError, match=r"expected a \.tar, \.tar\.gz, \.tgz or \.zip"):
        safe_extract(path, work / "out" / "x")


@pytest.mark.parametrize("name", ["broken.tar.gz", "broken.zip"])
def test_damaged_archive_is_a_value_error(work: Path, name: str):
    path = work / "archives" / name
    path.write_bytes(b"\x1f\x8b\x08\x00 definitely not a complete archive")
    with pytest.raises(ValueError, match=rf"cannot read .*{name} as a (tar|zip) archive"):
        safe_extract(path, work / "out" / "x")


def test_truncated_tar_gz_is_a_value_error(work: Path):
    archive = _tar(work / "archives" / "good.tar.gz", [(_info("big.bin"), bytes(range(256)) * 400)])
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    before = snapshot(work)
    with pytest.raises(ValueError, match="cannot read .*good.tar.gz as a tar archive"):
        safe_extract(archive, work / "out" / "x")
    assert snapshot(work) == before
