"""Downloading a file against a pinned checksum, so that its final name never exists unverified.

The body is streamed to ``<name>.part`` in the destination folder while its MD5 (or SHA-256)
is computed;
only when the length and the checksum match is it flushed, fsynced and renamed to ``<name>``
with ``os.replace``. On a wrong checksum, a truncated body or a dropped connection the ``.part``
file is removed and :class:`DownloadError` names the URL, the path and both checksums.
Only the standard library is used (urllib).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
from pathlib import Path


class DownloadError(OSError):
    """A download failed or did not match its pinned checksum; nothing was left behind."""


def download_file(
    url: str,
    path: str | Path,
    md5: str | None = None,
    *,
    sha256: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Fetch ``url`` to ``path``, verified against ``md5`` or ``sha256`` (exactly one).

    Args:
        url: Where to fetch from (any URL urllib opens; tests use a local ``http.server``).
        path: Final file name. Its folder is created if needed.
        md5: Expected MD5 hex digest of the whole body (the CIFAR archives publish MD5).
        sha256: Expected SHA-256 hex digest of the whole body (model weights).
        timeout: Seconds to wait for the server on each read.

    Returns:
        ``path`` as a Path.

    Raises:
        DownloadError: on any transfer error, a body shorter than its Content-Length or a
            checksum mismatch. The ``.part`` file is removed first.
    """
    if (md5 is None) == (sha256 is None):
        raise ValueError(f"download_file needs exactly one of md5 or sha256; got {md5=}, {sha256=}")
    algorithm, expected = ("md5", md5) if md5 is not None else ("sha256", sha256)
    path = Path(path)
    part = path.with_name(path.name + ".part")
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.new(algorithm, usedforsecurity=False)
    received = 0
    declared: int | None = None

    def fail(why: str) -> DownloadError:
        part.unlink(missing_ok=True)
        return DownloadError(
            f"download of {url} to {path} failed: {why}; expected {algorithm} {expected}, "
            f"got {algorithm} {digest.hexdigest()} of {received} bytes received"
        )

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            length = response.headers.get("Content-Length")
            declared = int(length) if length is not None and length.isdigit() else None
            while block := response.read(1 << 20):
                out.write(block)
                digest.update(block)
                received += len(block)
            out.flush()
            os.fsync(out.fileno())
    except (OSError, http.client.HTTPException) as err:  # URLError is an OSError
        raise fail(f"{type(err).__name__}: {err}") from err
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if declared is not None and received != declared:
        raise fail(f"truncated body ({received} of {declared} bytes)")
    if digest.hexdigest() != expected:
        raise fail("checksum mismatch")
    os.replace(part, path)
    return path
