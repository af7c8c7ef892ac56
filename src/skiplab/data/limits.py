"""Bounds on what a data file may make skiplab read, allocate or decode.

Hostile data can be small on disk and huge once expanded: an archive member of 3 GiB of
zeros, a PNG of 20000x20000 pixels, a pickle or safetensors header declaring a length it does
not hold. Every such size is known before the bytes are read, so it is checked first and
refused with a ``ValueError`` naming the file, the declared size and the bound:

=============================  ================  ============================================
bound                          value             applies to
=============================  ================  ============================================
``max_dataset_bytes``          4 GiB (default)   the expanded size of an archive (tar: its
                                                 headers and data; zip: its members), the
                                                 files read from a dataset folder, and the
                                                 decoded uint8 images; raise it with
                                                 ``load_dataset(max_dataset_bytes=...)``,
                                                 ``$SKIPLAB_MAX_DATASET_BYTES`` or
                                                 ``--max-dataset-bytes``
:data:`MAX_IMAGE_FILE_BYTES`   64 MiB            one image file or archive member
:data:`MAX_IMAGE_PIXELS`       89,478,485        one image (Pillow's warning threshold; Pillow
                                                 itself refuses only above twice that)
:data:`MAX_CIFAR_FILE_BYTES`   256 MiB           one CIFAR batch file (the largest official
                                                 one, CIFAR-100 ``train``, is 155 MB)
:data:`MAX_RATIO`              50 / 500          expanded / compressed size of a zip member of
                                                 at least 1 MiB: an image / anything else
=============================  ================  ============================================

Compression ratio: a zip member's compressed size is in its header, so its ratio is checked
before it is read. A ``.tar.gz`` is one gzip stream whose per-member compressed sizes are not
known, and its whole-stream ratio only after everything was decompressed; so a tar archive is
bounded by its declared sizes instead, checked at each header before the member's data is read
or skipped (tarfile never reads past a member's declared size, and skipping a member in a gzip
stream means decompressing it, so the bound caps the decompression work too).
"""

from __future__ import annotations

import json
import math
import os
import pickletools
import re
import struct
import zipfile
from pathlib import Path

ENV_VAR = "SKIPLAB_MAX_DATASET_BYTES"
DEFAULT_MAX_DATASET_BYTES = 4 * 2**30
MAX_IMAGE_FILE_BYTES = 64 * 2**20
MAX_IMAGE_PIXELS = 89_478_485  # PIL.Image.MAX_IMAGE_PIXELS, the point where Pillow warns
MAX_CIFAR_FILE_BYTES = 256 * 2**20
MAX_RATIO = {"image": 50, "other": 500}  # deflate's maximum is about 1032:1 (runs of one byte)
RATIO_FLOOR = 2**20  # smaller members are not ratio-checked: they cannot exhaust anything
MAX_SAFETENSORS_HEADER = 16 * 2**20
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
RAISE_HINT = f"raise it with --max-dataset-bytes or ${ENV_VAR} if the data is genuine"


def format_bytes(n: int) -> str:
    """``"3.0 GiB (3221225472 bytes)"``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit} ({n} bytes)"
    return f"{n} bytes"


def parse_bytes(text: str | int) -> int:
    """A byte count from ``4294967296``, ``"4GiB"``, ``"4G"`` or ``"512MiB"`` (powers of 2)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", str(text))
        if not m:
            raise ValueError(
                f"expected a byte count such as 4294967296, 4GiB or 512MiB; got {text!r}"
            )
        value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise ValueError(f"the byte bound must be positive; got {text!r}")
    return value


def max_dataset_bytes(value: str | int | None = None) -> int:
    """``value``, else ``$SKIPLAB_MAX_DATASET_BYTES``, else :data:`DEFAULT_MAX_DATASET_BYTES`."""
    if value is not None:
        return parse_bytes(value)
    env = os.environ.get(ENV_VAR)
    if env:
        try:
            return parse_bytes(env)
        except ValueError as err:
            raise ValueError(f"${ENV_VAR}: {err}") from None
    return DEFAULT_MAX_DATASET_BYTES


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


class Budget:
    """A running total of the bytes one source expands to, refused past ``limit``."""

    def __init__(self, where: str | Path, limit: int | None = None) -> None:
        self.where = str(where)
        self.limit = max_dataset_bytes(limit)
        self.total = 0

    def add(self, nbytes: int, what: str) -> None:
        """Count ``nbytes`` for ``what`` (e.g. ``"member 'a.png' (declared 3.0 GiB)"``)."""
        self.total += nbytes
        if self.total > self.limit:
            raise ValueError(
                f"refusing {self.where}: {what} brings its expanded size to "
                f"{format_bytes(self.total)}, above the bound of {format_bytes(self.limit)} "
                f"(max_dataset_bytes; {RAISE_HINT})"
            )


def check_member(archive: Path, name: str, size: int, compressed: int | None = None) -> None:
    """Refuse an image member above :data:`MAX_IMAGE_FILE_BYTES`, or a member of at least
    :data:`RATIO_FLOOR` whose expanded/compressed ratio exceeds :data:`MAX_RATIO`."""
    kind = "image" if is_image_name(name) else "other"
    if kind == "image" and size > MAX_IMAGE_FILE_BYTES:
        raise ValueError(
            f"refusing archive {archive}: member {name!r} declares {format_bytes(size)}, "
            f"above the bound of {format_bytes(MAX_IMAGE_FILE_BYTES)} for an image"
        )
    if compressed is not None and size >= RATIO_FLOOR:
        ratio = size / max(compressed, 1)
        if ratio > MAX_RATIO[kind]:
            what = "an image" if kind == "image" else "a file"
            raise ValueError(
                f"refusing archive {archive}: member {name!r} declares {format_bytes(size)} "
                f"from {format_bytes(compressed)} compressed, a ratio of {ratio:.0f}:1, above "
                f"the bound of {MAX_RATIO[kind]}:1 for {what}"
            )


def check_file_size(path: Path, size: int, bound: int, what: str) -> None:
    """Refuse a file of ``size`` bytes above ``bound`` (``what``: e.g. "an image file")."""
    if size > bound:
        raise ValueError(
            f"refusing {path}: it is {format_bytes(size)}, above the bound of "
            f"{format_bytes(bound)} for {what}"
        )


def check_pixels(width: int, height: int, where: str) -> None:
    """Refuse an image of more than :data:`MAX_IMAGE_PIXELS` pixels before it is decoded."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"refusing image {where}: {width}x{height} = {width * height} pixels, above the "
            f"bound of {MAX_IMAGE_PIXELS} pixels (a decompression bomb, or an image too large "
            "to train on)"
        )


# pickletools' codes for arguments whose length is read from the stream.
_LENGTH_PREFIX = {
    pickletools.TAKEN_FROM_ARGUMENT1: ("<B", 1),
    pickletools.TAKEN_FROM_ARGUMENT4: ("<i", 4),
    pickletools.TAKEN_FROM_ARGUMENT4U: ("<I", 4),
    pickletools.TAKEN_FROM_ARGUMENT8U: ("<Q", 8),
}


def check_pickle_lengths(data: bytes, where: str) -> None:
    """Refuse a pickle any of whose length-prefixed arguments (strings, bytes, frames) declares
    more bytes than the data holds, before the unpickler allocates that length.

    Reads only the opcodes and their length fields (no argument is copied).
    """
    pos, end = 0, len(data)
    while pos < end:
        op = pickletools.code2op.get(chr(data[pos]))
        if op is None:
            raise ValueError(f"{where} is not a readable pickle: unknown opcode at byte {pos}")
        at, pos, arg = pos, pos + 1, op.arg
        if op.name == "STOP":
            return
        if arg is None:
            continue
        if op.name == "FRAME":  # its length covers the opcodes that follow it
            n = struct.unpack_from("<Q", data, pos)[0] if pos + 8 <= end else 0
            if n > end - pos - 8:
                raise _declared(where, "FRAME", n, at, end - pos - 8)
            pos += 8
        elif arg.n >= 0:
            pos += arg.n
        elif arg.n == pickletools.UP_TO_NEWLINE:
            for _ in range(2 if arg.name.endswith("_pair") else 1):  # GLOBAL: module, name
                newline = data.find(b"\n", pos)
                if newline < 0:
                    raise ValueError(f"{where} is not a readable pickle: no line end after {pos}")
                pos = newline + 1
        elif arg.n in _LENGTH_PREFIX:
            fmt, width = _LENGTH_PREFIX[arg.n]
            if pos + width > end:
                break
            (n,) = struct.unpack_from(fmt, data, pos)
            pos += width
            if n < 0 or n > end - pos:
                raise _declared(where, f"{op.name} argument", n, at, end - pos)
            pos += n
    raise ValueError(f"{where} is not a readable pickle: it ends without a STOP opcode")


def _declared(where: str, what: str, n: int, at: int, left: int) -> ValueError:
    return ValueError(
        f"refusing {where}: a {what} at byte {at} declares {format_bytes(n)}, but only "
        f"{format_bytes(max(left, 0))} of the file follow it"
    )


_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "U16": 2, "I16": 2,
                "F16": 2, "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8,
                "F64": 8}  # fmt: skip


def check_safetensors(path: Path, limit: int | None = None) -> None:
    """Refuse a safetensors file whose header, or any tensor in it, declares more bytes than
    the file holds (or than ``limit``), reading only the header.

    Raises:
        ValueError: naming the file, the declared length and what the file holds.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError(f"cannot read safetensors file {path}: {size} bytes, no header")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, MAX_SAFETENSORS_HEADER):
            raise ValueError(
                f"cannot read safetensors file {path}: its header declares {format_bytes(n)}, but "
                f"the file holds {format_bytes(size)} and headers are bounded by "
                f"{format_bytes(MAX_SAFETENSORS_HEADER)}"
            )
        try:
            header = json.loads(fh.read(n))
        except ValueError as err:
            raise ValueError(f"cannot read safetensors file {path}: bad header ({err})") from None
    body = size - 8 - n
    total = 0
    for name, entry in header.items() if isinstance(header, dict) else ():
        if name == "__metadata__":
            continue
        try:
            begin, stop = (int(v) for v in entry["data_offsets"])
            declared = math.prod(int(d) for d in entry["shape"]) * _DTYPE_BYTES[entry["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"cannot read safetensors file {path}: bad entry {name!r}") from None
        if declared != stop - begin or stop > body or begin < 0:
            raise ValueError(
                f"cannot read safetensors file {path}: tensor {name!r} declares "
                f"{format_bytes(declared)} at bytes {begin}..{stop}, but the file holds "
                f"{format_bytes(body)} of tensor data"
            )
        total += declared
    if limit is not None and total > limit:
        raise ValueError(
            f"cannot read safetensors file {path}: its tensors total {format_bytes(total)}, above "
            f"the bound of {format_bytes(limit)}"
        )


def check_torch_zip(path: Path) -> None:
    """Refuse a ``torch.save`` zip file whose members declare more bytes than the file holds.

    ``torch.save`` stores its records uncompressed, and ``torch.load`` allocates each record's
    declared size before reading it; a file that is not a zip is left to ``torch.load``.
    """
    size = path.stat().st_size
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return
    with zf:
        for info in zf.infolist():
            if info.file_size > size or (
                info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size
            ):
                raise ValueError(
                    f"refusing {path}: its record {info.filename!r} declares "
                    f"{format_bytes(info.file_size)} ({format_bytes(info.compress_size)} "
                    f"stored), but the file holds {format_bytes(size)}"
                )
