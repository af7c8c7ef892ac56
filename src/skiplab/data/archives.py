"""Reading and extracting archives without trusting them, and fingerprinting sources.

Every member of a ``.tar`` / ``.tar.gz`` / ``.zip`` is checked before anything is read or
written: only regular files and directories, with relative names that stay inside the
archive root. Links of any kind, devices, FIFOs, absolute names, ``..`` components, Windows
separators and duplicate names are refused with the member's name in the error. Refusing every
link also closes the classic escapes (a symlink to ``/tmp`` followed by a member written
through it, a hard link to ``/etc/passwd``, a link to the destination itself).

Sizes are checked from the headers too, before any member's data is read (see
:mod:`skiplab.data.limits`): an image member above 64 MiB, a zip member whose compression ratio
is absurd for its type, and an archive whose members expand to more than ``max_dataset_bytes``
are refused, naming the member, its declared size and the bound.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from skiplab.data.limits import Budget, check_member, format_bytes, max_dataset_bytes

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
ZIP_SUFFIXES = (".zip",)
# What a damaged or truncated archive raises while it is read.
_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error)


@dataclass(frozen=True)
class Member:
    """One validated archive member: its normalised relative path and whether it is a folder."""

    path: str  # POSIX, relative, no "." or ".." parts, e.g. "train/cat/0001.jpg"
    is_dir: bool
    size: int


def archive_kind(path: Path) -> str | None:
    """``"tar"``, ``"zip"`` or None, from the file name."""
    name = path.name.lower()
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if name.endswith(ZIP_SUFFIXES):
        return "zip"
    return None


def fingerprint_dir(root: Path, files: list[Path]) -> str:
    """SHA-256 of the sorted relative paths, sizes and modification times of ``files``.

    Cheap (no file is read) and changes whenever a file is added, removed, resized or touched.
    """
    digest = hashlib.sha256()
    for rel in sorted(f.relative_to(root).as_posix() for f in files):
        st = (root / rel).stat()
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def normalise_member_name(name: str, archive: Path, is_dir: bool) -> str:
    """The member's relative POSIX path, or ValueError if it could leave the archive root."""

    def refuse(why: str) -> ValueError:
        return ValueError(f"refusing archive {archive}: member {name!r} {why}")

    if "\\" in name:
        raise refuse("contains a backslash (Windows path separator)")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise refuse("has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise refuse("contains a '..' component")
    if not parts and not is_dir:
        raise refuse("is a file that would replace the destination folder itself")
    return "/".join(parts)


def _check_unique(members: list[Member], archive: Path) -> None:
    # A name seen twice (the later would overwrite the earlier), or a file that another member
    # treats as a folder ("a" then "a/b"), makes the extracted tree depend on member order.
    seen: dict[str, bool] = {}
    for m in members:
        if m.path in seen and not (m.is_dir and seen[m.path]):
            raise ValueError(f"refusing archive {archive}: member {m.path!r} appears twice")
        seen[m.path] = m.is_dir
    for m in members:
        parent = m.path.rpartition("/")[0]
        while parent:
            if seen.get(parent) is False:
                raise ValueError(
                    f"refusing archive {archive}: member {m.path!r} lies under {parent!r}, "
                    "which is a file"
                )
            parent = parent.rpartition("/")[0]


def _tar_type(info: tarfile.TarInfo) -> str:
    if info.issym():
        return f"a symbolic link (to {info.linkname!r})"
    if info.islnk():
        return f"a hard link (to {info.linkname!r})"
    if info.ischr() or info.isblk():
        return "a device file"
    if info.isfifo():
        return "a FIFO"
    return f"of unsupported tar type {info.type!r}"


@contextmanager
def open_tar(archive: Path) -> Iterator[tarfile.TarFile]:
    """``tarfile.open`` that reports an unreadable archive as a ValueError naming it."""
    try:
        tf = tarfile.open(archive)
    except _READ_ERRORS as err:
        raise ValueError(f"cannot read {archive} as a tar archive: {err}") from err
    with tf:
        yield tf


def validate_tar(
    tf: tarfile.TarFile,
    archive: Path,
    max_bytes: int | None = None,
    max_member: tuple[int, str] | None = None,
) -> list[tuple[Member, tarfile.TarInfo]]:
    """Check every member of an open tar file, each as soon as its header is read.

    A member is checked before the next header is looked for, which in a compressed archive
    means before its data is decompressed: an oversized member is refused at once. The
    expanded size counted against ``max_bytes`` (default: :func:`~skiplab.data.limits.
    max_dataset_bytes`) is the tar stream's: headers plus data padded to 512-byte blocks.
    ``max_member`` = ``(bytes, "a CIFAR batch file")`` bounds every file member.
    """
    budget = Budget(f"archive {archive}", max_bytes)
    checked = []
    while True:
        try:
            info = tf.next()
        except _READ_ERRORS as err:
            raise ValueError(f"cannot read {archive} as a tar archive: {err}") from err
        if info is None:
            break
        if not (info.isreg() or info.isdir()):
            raise ValueError(
                f"refusing archive {archive}: member {info.name!r} is {_tar_type(info)}; "
                "only regular files and directories are allowed"
            )
        path = normalise_member_name(info.name, archive, info.isdir())
        if info.isreg():
            check_member(archive, info.name, info.size)
            if max_member is not None and info.size > max_member[0]:
                raise ValueError(
                    f"refusing archive {archive}: member {info.name!r} declares "
                    f"{format_bytes(info.size)}, above the bound of "
                    f"{format_bytes(max_member[0])} for {max_member[1]}"
                )
        padded = -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        budget.add(
            info.offset_data - info.offset + padded,
            f"member {info.name!r} (declared {format_bytes(info.size)})",
        )
        if path:  # "./" is the archive root itself
            checked.append((Member(path, info.isdir(), info.size), info))
    _check_unique([m for m, _ in checked], archive)
    return checked


def validate_zip(
    zf: zipfile.ZipFile, archive: Path, max_bytes: int | None = None
) -> list[tuple[Member, zipfile.ZipInfo]]:
    """Check every member of an open zip file, sizes and compression ratios included."""
    budget = Budget(f"archive {archive}", max_bytes)
    checked = []
    for info in zf.infolist():
        mode = info.external_attr >> 16  # Unix mode bits, when the zip was made on Unix
        if stat.S_ISLNK(mode):
            raise ValueError(
                f"refusing archive {archive}: member {info.filename!r} is a symbolic link; "
                "only regular files and directories are allowed"
            )
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise ValueError(
                f"refusing archive {archive}: member {info.filename!r} is a special file "
                f"(mode {oct(mode)}); only regular files and directories are allowed"
            )
        path = normalise_member_name(info.filename, archive, info.is_dir())
        if not info.is_dir():
            check_member(archive, info.filename, info.file_size, info.compress_size)
        budget.add(
            info.file_size, f"member {info.filename!r} (declared {format_bytes(info.file_size)})"
        )
        if path:
            checked.append((Member(path, info.is_dir(), info.file_size), info))
    _check_unique([m for m, _ in checked], archive)
    return checked


@contextmanager
def _open_zip(archive: Path) -> Iterator[zipfile.ZipFile]:
    try:
        zf = zipfile.ZipFile(archive)
    except _READ_ERRORS as err:
        raise ValueError(f"cannot read {archive} as a zip archive: {err}") from err
    with zf:
        yield zf


def safe_extract(archive: str | Path, dest: str | Path, max_bytes: int | str | None = None) -> Path:
    """Extract a ``.tar``/``.tar.gz``/``.tgz``/``.zip`` into ``dest``, all or nothing.

    Every member is validated before anything is written (see the module docstring). The
    members are then written into a temporary folder beside ``dest``, which is renamed to
    ``dest`` only when everything succeeded; so if a member is refused or extraction fails,
    ``dest`` and its parent are left exactly as they were.

    Args:
        archive: The archive file.
        dest: Folder to create; it must not exist yet, or be an empty folder.
        max_bytes: Bound on the expanded size (default: ``$SKIPLAB_MAX_DATASET_BYTES`` or
            4 GiB; see :mod:`skiplab.data.limits`).

    Returns:
        ``dest`` as a Path.

    Raises:
        ValueError: for an unknown archive type, a non-empty ``dest``, a refused member, or
            a member that cannot be read (damaged data, a CRC that does not match).
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise ValueError(f"expected an archive file; got {archive} (not found)")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ValueError(f"extraction destination must be new or an empty folder; got {dest}")
    kind = archive_kind(archive)
    if kind is None:
        raise ValueError(f"expected a .tar, .tar.gz, .tgz or .zip archive; got {archive}")

    opener = open_tar if kind == "tar" else _open_zip
    with opener(archive) as handle:
        validate = validate_tar if kind == "tar" else validate_zip
        checked = validate(handle, archive, max_dataset_bytes(max_bytes))
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent))
        try:
            for member, info in checked:
                target = tmp.joinpath(*member.path.split("/"))
                if member.is_dir:
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                # "xb": never open an existing path (so never write through anything but
                # the fresh file); permissions come from the umask, never from the archive.
                # Streamed: never more than one buffer of a member in memory. Neither format
                # yields more than the declared size that was checked above.
                try:
                    src = handle.extractfile(info) if kind == "tar" else handle.open(info)
                    with src, open(target, "xb") as out:
                        shutil.copyfileobj(src, out)
                except _READ_ERRORS as err:
                    raise ValueError(
                        f"cannot extract member {member.path!r} of {archive}: {err}"
                    ) from err
            if dest.exists():
                dest.rmdir()  # empty, checked above
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest
