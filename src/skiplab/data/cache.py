"""A small on-disk cache of decoded datasets: safetensors files with a checksum inside.

A cache file holds uint8 images, int64 targets and string metadata (classes, mean, std, the
source). It is written atomically (temporary file in the same folder, flush + fsync,
``os.replace``), so a reader sees either nothing or a complete file, and read with safetensors,
which cannot execute code. The SHA-256 of the tensors is stored in the metadata and checked on
every load; a file that fails the check is reported with a warning and rebuilt by the caller,
never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as save_safetensors

from skiplab.fileio import atomic_write

CACHE_VERSION = "1"  # bump when the decoded format changes; old files are then ignored


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
    atomic_write(path, save_safetensors(tensors, metadata=header))


def load_cached(path: Path) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The tensors and metadata stored at ``path``; None if there is no valid file.

    A file that exists but cannot be read or fails its checksum is reported with a
    ``UserWarning`` (so that the caller's rebuild is never silent) and None is returned.
    """
    if not path.is_file():
        return None
    try:
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
