"""Fault 5: hostile archives, refused before any byte is written.

Each archive is given to :func:`~skiplab.data.safe_extract` (destination ``parent/dest``) and,
for tar files, to the image-folder loader, which reads archives member by member. Passing
means: a ``ValueError`` naming the member, the destination not created, the parent folder
unchanged (names, sizes and its own modification time), and the outside target untouched.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

from skiplab.data import load_dataset, safe_extract
from skiplab.selftest.common import (
    FaultResult,
    check,
    command_for,
    error_message,
    run_trials,
)

TITLE = "archive members ../x, /abs/x, escaping/self links, hard links, device, FIFO, zip ../x"


def tar_info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    """A tar member header of type ``kind`` (mode 755 for folders, 644 otherwise)."""
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    """Write ``members`` (header, bytes) as they are, unchecked (gzip for a ``.gz`` name)."""
    with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as tf:
        for info, data in members:
            if info.isreg():
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return path


def write_zip(path: Path, members: list[tuple[str, bytes, int]]) -> Path:
    """Write ``members`` (name, bytes, st_mode) as they are, unchecked."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


def cases(outside: Path) -> dict[str, tuple[str, list, str]]:
    """name -> (kind, members, the member the error must name)."""
    ok = (tar_info("train/c0/0.png"), b"x")
    zok = ("ok.txt", b"x", 0o100644)
    o = str(outside)
    return {
        "member ../x": ("tar", [ok, (tar_info("../x"), b"evil")], "../x"),
        "member a/../../x": ("tar", [ok, (tar_info("a/../../x"), b"evil")], "a/../../x"),
        "member /abs/x": ("tar", [ok, (tar_info(o), b"evil")], o),
        "symlink outside, then a member through it": (
            "tar",
            [(tar_info("link", tarfile.SYMTYPE, str(outside.parent)), b""),
             (tar_info(f"link/{outside.name}"), b"evil")],
            "link",
        ),
        "hard link to an outside path": (
            "tar", [ok, (tar_info("hard", tarfile.LNKTYPE, o), b"")], "hard"),
        "symlink to the destination itself": (
            "tar", [ok, (tar_info("self", tarfile.SYMTYPE, "."), b"")], "self"),
        "hard link to the destination itself": (
            "tar", [ok, (tar_info("selfhard", tarfile.LNKTYPE, "."), b"")], "selfhard"),
        "character device": ("tar", [ok, (tar_info("dev", tarfile.CHRTYPE), b"")], "dev"),
        "FIFO": ("tar", [ok, (tar_info("fifo", tarfile.FIFOTYPE), b"")], "fifo"),
        "zip member ../x": ("zip", [zok, ("../x", b"evil", 0o100644)], "../x"),
        "zip member /abs/x": ("zip", [zok, (o, b"evil", 0o100644)], o),
        "zip symlink": ("zip", [("ln", str(outside).encode(), 0o120777)], "ln"),
    }  # fmt: skip


def _state(folder: Path) -> tuple:
    entries = sorted(
        (p.relative_to(folder).as_posix(), p.lstat().st_size) for p in folder.rglob("*")
    )
    return folder.stat().st_mtime_ns, entries


def trial(work: Path, name: str, kind: str, members: list, member: str, outside: Path) -> str:
    case = work / name.replace(" ", "-").replace("/", "_")
    parent = case / "parent"
    parent.mkdir(parents=True)
    (parent / "keep.txt").write_text("already here")
    archive = case / f"hostile.{'tar' if kind == 'tar' else 'zip'}"
    (write_tar if kind == "tar" else write_zip)(archive, members)
    before, outside_before = _state(parent), outside.read_bytes()
    loaders = [("safe_extract", lambda: safe_extract(archive, parent / "dest"))]
    if kind == "tar":
        loaders.append(
            ("imagefolder loader", lambda: load_dataset(
                "imagefolder", "train", data_dir=archive, cache_dir=parent / "cache"))
        )  # fmt: skip
    notes = []
    for label, call in loaders:
        message = error_message(call, ValueError, f"{label} accepted the archive")
        check(f"member {member!r}" in message, f"{label}: the error does not name {member!r}")
        check(_state(parent) == before, f"{label}: the destination's parent changed")
        check(outside.read_bytes() == outside_before, f"{label}: the outside file changed")
        notes.append(message.split(": ", 1)[1])
    return notes[0]


def run(work: Path, trials: int | None = None, seed: int = 0, progress=lambda: None):
    result = FaultResult("hostile-archive", TITLE, command=command_for("hostile-archive", None))
    outside = work / "outside" / "target.txt"
    outside.parent.mkdir(parents=True)
    outside.write_text("must never change")
    items = [
        (name, lambda n=name, c=c: trial(work, n, *c, outside))
        for name, c in cases(outside).items()
    ]
    result = run_trials(result, items[: trials if trials else None], progress)
    check(outside.read_text() == "must never change", "the outside file changed")
    return result
