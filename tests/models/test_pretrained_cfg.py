"""Per-model pretrained configs, create_model(pretrained=...) against a server on 127.0.0.1,
and torch.hub.load from the local checkout."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from skiplab import create_model, list_models
from skiplab.data import DownloadError
from skiplab.fileio import sha256_file
from skiplab.models import pretrained as pretrained_module
from skiplab.models.pretrained import PRETRAINED_CFGS, fetch_pretrained
from tests.data.test_download import Handler, server  # noqa: F401 (the fixture)

ROOT = Path(__file__).resolve().parents[2]


def weights_bytes(seed: int = 1) -> tuple[bytes, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    state = create_model("resnet20").state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue(), state


def serve(monkeypatch, server_url, name, data: bytes, sha256: str | None = None):
    import hashlib

    file_name = f"{name}-test.th"
    Handler.files[f"/{file_name}"] = data
    cfg = replace(
        PRETRAINED_CFGS[name],
        url=f"{server_url}/{file_name}",
        file_name=file_name,
        sha256=hashlib.sha256(data).hexdigest() if sha256 is None else sha256,
    )
    monkeypatch.setitem(PRETRAINED_CFGS, name, cfg)
    return cfg


def test_every_config_is_complete():
    assert {"resnet20", "resnet56"} <= set(PRETRAINED_CFGS)
    for name, cfg in PRETRAINED_CFGS.items():
        assert name in list_models() and cfg.url.startswith("https://")
        assert cfg.url.endswith("/" + cfg.file_name) and cfg.license and cfg.source
        assert len(cfg.input_size) == 3 and len(cfg.mean) == len(cfg.std) == cfg.input_size[0]
        if cfg.sha256 is None:
            assert "sha256 unknown" in cfg.note and "never downloaded" in cfg.note
        else:  # the published name carries the digest's first 8 hex digits
            assert re.fullmatch(r"[0-9a-f]{64}", cfg.sha256)
            assert cfg.file_name.split("-")[1].split(".")[0] == cfg.sha256[:8]
    assert create_model("resnet56").pretrained_cfg == PRETRAINED_CFGS["resnet56"].to_dict()
    assert create_model("resnet50").pretrained_cfg is None


def test_pinned_sha256_of_the_shared_checkpoints(shared_dir, server, monkeypatch, tmp_path):  # noqa: F811
    for name in ("resnet20", "resnet56"):
        cfg = PRETRAINED_CFGS[name]
        assert sha256_file(shared_dir / "weights" / cfg.file_name) == cfg.sha256
    # The real file, served locally under its pinned digest, loads through pretrained=True.
    data = (shared_dir / "weights" / "resnet56-4bfd9763.th").read_bytes()
    serve(monkeypatch, server, "resnet56", data, sha256=PRETRAINED_CFGS["resnet56"].sha256)
    monkeypatch.setenv("SKIPLAB_CACHE", str(tmp_path))
    model = create_model("resnet56", pretrained=True)
    legacy = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")["state_dict"]
    assert torch.equal(model.fc.weight, legacy["module.linear.weight"])


def test_pretrained_true_downloads_verifies_and_caches(server, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setenv("SKIPLAB_CACHE", str(tmp_path))
    data, state = weights_bytes()
    cfg = serve(monkeypatch, server, "resnet20", data)
    model = create_model("resnet20", pretrained=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    cached = tmp_path / "weights" / cfg.file_name
    assert sha256_file(cached) == cfg.sha256
    Handler.files.clear()  # from the cache now, without the server
    assert fetch_pretrained("resnet20") == cached
    cached.write_bytes(b"damaged")  # re-hashed before use: fetched again
    Handler.files[f"/{cfg.file_name}"] = data
    assert sha256_file(fetch_pretrained("resnet20")) == cfg.sha256
    # Another num_classes: the weights load, then the classifier is replaced.
    three = create_model("resnet20", pretrained=True, num_classes=3)
    assert three.fc.out_features == 3 and torch.equal(three.conv1.weight, state["conv1.weight"])


def test_a_wrong_or_unknown_checksum_downloads_nothing(server, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setenv("SKIPLAB_CACHE", str(tmp_path))
    data, _ = weights_bytes()
    serve(monkeypatch, server, "resnet20", data, sha256="0" * 64)
    with pytest.raises(DownloadError, match="checksum mismatch.*expected sha256 0000"):
        create_model("resnet20", pretrained=True)
    assert list((tmp_path / "weights").iterdir()) == []
    monkeypatch.setitem(
        PRETRAINED_CFGS, "resnet20", replace(PRETRAINED_CFGS["resnet20"], sha256=None, note="x")
    )
    with pytest.raises(ValueError, match="refusing to download .*resnet20-test.th"):
        create_model("resnet20", pretrained=True)
    with pytest.raises(ValueError, match="resnet32: sha256 unknown"):
        create_model("resnet32", pretrained=True)
    with pytest.raises(ValueError, match="resnet50 has no published weights in skiplab"):
        create_model("resnet50", pretrained=True)
    with pytest.raises(ValueError, match="pretrained must be a bool or a path; got 3"):
        create_model("resnet20", pretrained=3)
    assert list((tmp_path / "weights").iterdir()) == []
    assert pretrained_module.get_pretrained_cfg("unet") is None


def test_torch_hub_load_from_the_local_checkout(tmp_path):
    data, state = weights_bytes(seed=2)
    (tmp_path / "w.th").write_bytes(data)
    code = (
        "import sys, torch\n"
        f"m = torch.hub.load({str(ROOT)!r}, 'resnet20', source='local', "
        f"pretrained={str(tmp_path / 'w.th')!r})\n"
        "import skiplab\n"
        "print(skiplab.__file__)\n"
        "print(float(m.conv1.weight.double().sum()), m.pretrained_cfg['file_name'])\n"
        "print(type(torch.hub.load(sys.argv[1], 'unet', source='local', num_classes=3)).__name__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only hubconf finds src
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    where, weights, model = out.stdout.splitlines()
    assert Path(where).resolve().is_relative_to(ROOT / "src")
    assert weights.split() == [
        repr(float(state["conv1.weight"].double().sum())),
        "resnet20-12fca82f.th",
    ]
    assert model == "UNet"
