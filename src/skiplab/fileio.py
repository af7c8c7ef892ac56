"""File helpers every part of skiplab shares: digests, atomic writes and CSV files.

An atomic write puts the bytes in a temporary file in the same folder (same file system, so
``os.replace`` is atomic), flushes and fsyncs it, replaces the target, and fsyncs the folder so
that the rename itself survives a power cut. A reader sees the old file or the complete new
one, never a partial one; a crash leaves at most a ``.tmp-*`` file, which the checkpoint code
cleans at the next start.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

TMP_PREFIX = ".tmp-"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: str | Path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically (creating the folder); return its sha256."""
    return atomic_write_parts(path, [data])


def atomic_write_parts(path: str | Path, parts: Iterable[bytes | memoryview]) -> str:
    """:func:`atomic_write` of the concatenated ``parts``, written one by one (never joined
    in memory); return the sha256 of the whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as fh:
            for part in parts:
                digest.update(part)
                fh.write(part)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def csv_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """``header`` and ``rows`` as CSV text (``csv.writer``: a comma, quote or newline in a cell
    is quoted; ``None`` is an empty cell; lines end with ``\\n``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a CSV row of {len(row)} cells for {len(header)} columns: {row!r}")
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue()


def atomic_write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """Write a CSV file (see ``csv_text``) atomically; return its sha256."""
    return atomic_write(path, csv_text(header, rows).encode())
