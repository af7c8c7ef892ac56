"""Fault 6: bad downloads from a real ``http.server`` on 127.0.0.1.

The server sends wrong bytes, a body cut short of its Content-Length, or drops the connection
with a TCP reset mid-transfer. Each goes to :func:`~skiplab.data.download_file` and to
``load_dataset("cifar10", download=True)`` (pointed at the local server). While sending, the
server itself checks that the final file name does not exist. Passing means: a
``DownloadError`` naming the URL, the path, the expected and the actual checksum; the folder
left empty (no final file, no ``.part``, nothing extracted); and the final name never seen
during the transfer.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from skiplab.data import DownloadError, download_file, load_dataset
from skiplab.data.cifar import CIFAR
from skiplab.selftest.common import (
    FaultResult,
    check,
    command_for,
    error_message,
    run_trials,
)

TITLE = "wrong bytes, truncated body, connection reset mid-transfer (local HTTP server)"
BODY = bytes(range(256)) * 256  # 64 KiB
BODY_MD5 = hashlib.md5(BODY).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    watch: list[Path] = []  # final names that must not exist while a body is sent
    seen: list[str] = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        kind = self.path.strip("/").split("/")[0]
        body = BODY[::-1] if kind == "wrong" else BODY
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        half = len(body) // 2
        self.wfile.write(body[:half])
        self.wfile.flush()
        self.seen.extend(str(p) for p in self.watch if p.exists())
        if kind == "truncated":
            self.close_connection = True
            return
        if kind == "dropped":
            # SO_LINGER 0: close() sends a TCP reset in the middle of the transfer.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        self.wfile.write(body[half:])


class Server:
    """``with Server() as url:`` a ThreadingHTTPServer on 127.0.0.1 in a thread."""

    def __enter__(self) -> str:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _expect_failure(call, url: str, path: Path, expected: str) -> str:
    message = error_message(call, DownloadError, "the bad download was accepted")
    for what, word in (
        ("URL", url),
        ("path", str(path)),
        ("expected md5", f"expected md5 {expected}"),
    ):
        check(word in message, f"the error does not name the {what}: {message}")
    check("got md5 " in message, f"the error does not give the actual checksum: {message}")
    return message


def trial(base: str, work: Path, kind: str, via: str) -> str:
    folder = work / f"{via}-{kind}"
    folder.mkdir(parents=True)
    if via == "download_file":
        path, url = folder / "file.bin", f"{base}/{kind}/file.bin"
        _Handler.watch = [path]
        call = lambda: download_file(url, path, BODY_MD5, timeout=10)  # noqa: E731
        expected = BODY_MD5
    else:
        spec = CIFAR["cifar10"]
        path, url = folder / spec.archive, f"{base}/{kind}/{spec.archive}"
        _Handler.watch = [path, folder / spec.folder]
        CIFAR["cifar10"] = replace(spec, url=url)
        expected = spec.md5

        def call():
            try:
                load_dataset("cifar10", "train", data_dir=folder, download=True)
            finally:
                CIFAR["cifar10"] = spec

    _Handler.seen = []
    message = _expect_failure(call, url, path, expected)
    check(not _Handler.seen, f"final name existed during the transfer: {_Handler.seen}")
    left = sorted(p.name for p in folder.iterdir())
    check(not left, f"files left behind (or extracted): {left}")
    return message.replace(str(work), "...").replace(base, "http://127.0.0.1:PORT")


def run(work: Path, trials: int | None = None, seed: int = 0, progress=lambda: None):
    result = FaultResult("bad-download", TITLE, command=command_for("bad-download", None))
    with Server() as base:
        items = [
            (f"{kind} via {via}", lambda k=kind, v=via: trial(base, work, k, v))
            for via in ("download_file", "load_dataset(download=True)")
            for kind in ("wrong", "truncated", "dropped")
        ]
        return run_trials(result, items[: trials if trials else None], progress)
