"""A small on-disk cache of decoded datasets: safetensors files with a checksum inside.

A cache file holds uint8 images, int64 targets and string metadata (classes, mean, std, the
source). It is written atomically (temporary file in the same folder, flush + fsync,
``os.replace``), so a reader sees either nothing or a complete file, streamed from the tensors'
memory (the safetensors layout written here, so that no copy of the dataset is made), and read
with safetensors,
which cannot execute code, after its header was checked: no tensor may declare more bytes
than the file holds, or than ``max_dataset_bytes`` together. The SHA-256 of the tensors is
stored in the metadata and checked on every load; a file that fails a check is reported with a
warning and rebuilt by the caller, never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from skiplab.data.limits import check_safetensors
from skiplab.fileio import atomic_write_parts

CACHE_VERSION = "1"  # bump when the decoded format changes; old files are then ignored
_DTYPES = {torch.uint8: "U8", torch.int64: "I64", torch.float32: "F32"}


def default_cache_dir() -> Path:
    """``$SKIPLAB_CACHE`` if set, else ``$XDG_CACHE_HOME/skiplab``, else ``~/.cache/skiplab``
    (the XDG convention, as torch.hub and pip use), whatever the working directory."""
    env = os.environ.get("SKIPLAB_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    # XDG: a relative XDG_CACHE_HOME is invalid and ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "skiplab"


def tensors_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of ``tensors`` (sorted by name)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        digest.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\n".encode())
        digest.update(memoryview(t.view(torch.uint8).reshape(-1).numpy()))
    return digest.hexdigest()


def save_cached(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Store ``tensors`` and JSON-serialisable ``meta`` at ``path`` with their checksum."""
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    header = {
        "version": CACHE_VERSION,
        "checksum": tensors_checksum(tensors),
        "meta": json.dumps(meta, sort_keys=True),
    }
    atomic_write_parts(path, safetensors_parts(tensors, header))


def safetensors_parts(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Iterator:
    """The safetensors file of contiguous CPU ``tensors``: the header, then each tensor's
    memory as it is (widest dtype first, so every tensor stays aligned)."""
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header: dict = {"__metadata__": metadata}
    offset = 0
    for k in order:
        t = tensors[k]
        nbytes = t.numel() * t.element_size()
        header[k] = {
            "dtype": _DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    yield struct.pack("<Q", len(text)) + text
    for k in order:
        yield memoryview(tensors[k].reshape(-1).view(torch.uint8).numpy())


def load_cached(
    path: Path, max_bytes: int | None = None
) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The tensors and metadata stored at ``path``; None if there is no valid file.

    ``max_bytes`` bounds the tensors' declared size (none: only the file's own size).

    A file that exists but cannot be read or fails its checksum is reported with a
    ``UserWarning`` (so that the caller's rebuild is never silent) and None is returned.
    """
    if not path.is_file():
        return None
    try:
        check_safetensors(path, max_bytes)
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            if header.get("version") != CACHE_VERSION:
                warnings.warn(
                    f"cache file {path} has format version {header.get('version')!r}, "
                    f"expected {CACHE_VERSION!r}; rebuilding it",
                    stacklevel=3,
                )
                return None
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        meta = json.loads(header["meta"])
        actual = tensors_checksum(tensors)
    except Exception as err:  # any parse error means the file is damaged
        warnings.warn(f"cache file {path} is corrupt ({err}); rebuilding it", stacklevel=3)
        return None
    if actual != header.get("checksum"):
        warnings.warn(
            f"cache file {path} is corrupt (checksum {actual[:16]}... does not match the "
            f"stored {str(header.get('checksum'))[:16]}...); rebuilding it",
            stacklevel=3,
        )
        return None
    return tensors, meta
