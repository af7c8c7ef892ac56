"""Downloads against a local http.server on 127.0.0.1: verified or nothing left behind."""

from __future__ import annotations

import hashlib
import socket
import struct
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from skiplab.data import DownloadError, download_cifar, download_file, load_dataset
from skiplab.data.cifar import CIFAR
from tests.data._fixtures import make_cifar_folder, tar_folder

BODY = bytes(range(256)) * 64  # 16 KiB
BODY_MD5 = hashlib.md5(BODY).hexdigest()


class Handler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:
        if self.path == "/wrong":
            body = BODY[::-1]
        elif self.path in ("/good", "/truncated", "/dropped"):
            body = BODY
        elif self.path in self.files:
            body = self.files[self.path]
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path == "/truncated":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True  # FIN after half the declared length
        elif self.path == "/dropped":
            self.wfile.write(body[:5000])
            self.wfile.flush()
            # Abort: SO_LINGER 0 makes close() send a TCP reset mid-transfer.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        else:
            self.wfile.write(body)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    Handler.files = {}


def test_good_download_is_verified_and_renamed(server, tmp_path: Path):
    path = download_file(f"{server}/good", tmp_path / "sub" / "file.bin", BODY_MD5)
    assert path.read_bytes() == BODY
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.bin"]  # no .part left


@pytest.mark.parametrize(
    ("route", "why", "received"),
    [
        ("/wrong", "checksum mismatch", BODY[::-1]),
        ("/truncated", "truncated body", BODY[: len(BODY) // 2]),
        ("/dropped", None, None),
        ("/missing", "HTTPError", b""),
    ],
)
def test_failed_download_leaves_nothing(server, tmp_path: Path, route, why, received):
    path = tmp_path / "file.bin"
    url = f"{server}{route}"
    with pytest.raises(DownloadError) as info:
        download_file(url, path, BODY_MD5, timeout=10)
    message = str(info.value)
    assert url in message and str(path) in message and f"expected md5 {BODY_MD5}" in message
    if why is not None:
        assert why in message
        assert f"got md5 {hashlib.md5(received).hexdigest()}" in message
    else:  # a reset arrives after an unknown share of the body; the partial md5 is named
        assert "got md5 " in message and "bytes received" in message
    assert list(tmp_path.iterdir()) == []  # neither the final name nor the .part


def test_download_cifar_checks_the_pinned_md5(server, tmp_path: Path):
    with pytest.raises(DownloadError, match=CIFAR["cifar10"].md5):
        download_cifar("cifar10", tmp_path, url=f"{server}/good")
    assert list(tmp_path.iterdir()) == []


def test_download_then_load(server, tmp_path: Path, monkeypatch):
    # A small archive in the official layout, served locally; the pinned MD5 is swapped for
    # this archive's so that the whole download -> verify -> load path runs.
    expected = make_cifar_folder(tmp_path / "src", "cifar10", per_batch=4)
    archive = tar_folder(tmp_path / "src", tmp_path / "fake.tar.gz")
    data = archive.read_bytes()
    Handler.files = {"/cifar-10-python.tar.gz": data}
    monkeypatch.setitem(
        CIFAR, "cifar10", replace(CIFAR["cifar10"], md5=hashlib.md5(data).hexdigest())
    )
    root = tmp_path / "root"
    with pytest.raises(ValueError, match="Pass download=True"):
        load_dataset("cifar10", "train", data_dir=root.parent / "absent")
    path = download_cifar("cifar10", root, url=f"{server}/cifar-10-python.tar.gz")
    assert path == root / "cifar-10-python.tar.gz" and path.read_bytes() == data
    ds = load_dataset("cifar10", "test", data_dir=root)
    assert torch.equal(ds.images, torch.from_numpy(expected["test"][0]))
    assert torch.equal(ds.targets, torch.from_numpy(expected["test"][1]))
