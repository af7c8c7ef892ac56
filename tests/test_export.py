"""BatchNorm folding (fused and unfused models agree) and export (safetensors, ONNX)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from skiplab import create_model, list_models
from skiplab.cli import main
from skiplab.export import MissingExtra, check_onnx, export_onnx, require
from skiplab.fuse import conv_bn_pairs, fuse_bn
from skiplab.registry import get_model_entry

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = (
    "resnet", "resnext", "wide_resnet", "plain", "preact_resnet",
    "cifar_resnet", "cifar_plain", "cifar_preact_resnet", "densenet", "cifar_densenet",
)  # fmt: skip
# The deepest / widest nets are covered by a smaller sibling of the same blocks; they cost
# tens of seconds each on two cores without testing anything new.
HEAVY = {"resnet1202", "preact_resnet1001", "resnext101_32x8d", "wide_resnet101_2",
         "densenet_bc190_k40", "densenet_bc250_k24", "preact_resnet200"}  # fmt: skip
NAMES = [n for f in FAMILIES for n in list_models(family=f) if n not in HEAVY]
HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript"))
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None


def _with_bn_statistics(name: str) -> tuple[nn.Module, torch.Tensor]:
    """``name`` with non-trivial BN state: running stats from two train-mode passes, random
    affine parameters; returns the model in eval mode and an input."""
    torch.manual_seed(0)
    model = create_model(name)
    c, h, w = get_model_entry(name).input_size
    size = min(h, 64)
    x = torch.randn(2, c, size, size)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.momentum = None  # cumulative average
        with torch.no_grad():
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.2)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, c, size, size) * 2 + 0.5)
        model(torch.randn(4, c, size, size))
    return model.eval(), x


def test_the_families_cover_the_resnets_and_densenets():
    assert {"resnet20", "resnet50", "preact_resnet110", "plain20", "densenet121"} <= set(NAMES)


def _max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item() / max(1.0, b.abs().max().item())


@pytest.mark.parametrize("name", NAMES)
def test_fused_and_unfused_agree_within_1e_5(name):
    # In float64, so that what is compared is the folding and not float32 rounding, which
    # differs between any two orders of the same arithmetic (see the float32 test below).
    model, x = _with_bn_statistics(name)
    model, x = model.double(), x.double()
    fused = fuse_bn(model)
    with torch.no_grad():
        assert _max_rel_diff(fused(x), model(x)) <= 1e-5
    assert len(conv_bn_pairs(model)) > 0 or name.startswith(("densenet40", "densenet_bc"))


@pytest.mark.parametrize("name", ["resnet20", "resnet50", "preact_resnet110"])
def test_fused_and_unfused_agree_in_float32(name):
    model, x = _with_bn_statistics(name)
    fused = fuse_bn(model)
    with torch.no_grad():
        assert _max_rel_diff(fused(x), model(x)) <= 1e-4


@pytest.mark.parametrize(
    ("name", "bn_left"),
    [
        ("resnet20", 0),
        ("resnet50", 0),
        ("plain20", 0),
        # Pre-activation: each unit's bn1 reads the unit input, and the final norm the sum.
        ("preact_resnet110", 54 + 1),
        ("preact_resnet50", 16 + 1),
        # DenseNet: norm1 of every layer (58) + 3 transitions + final norm5; conv0->norm0 and
        # conv1->norm2 of all 58 layers are folded.
        ("densenet121", 58 + 3 + 1),
    ],
)
def test_which_batchnorms_are_folded(name, bn_left):
    model = create_model(name)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    fused = fuse_bn(model)
    left = sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert left == bn_left
    assert n_bn - left == len(conv_bn_pairs(model))
    # The original is untouched and keeps its mode.
    assert model.training and sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == n_bn
    assert not fused.training


def test_state_dict_keeps_names_and_reloads_into_a_fused_model():
    model, x = _with_bn_statistics("resnet20")
    fused = fuse_bn(model)
    keys = set(fused.state_dict())
    assert "conv1.bias" in keys and "layer1.0.conv2.bias" in keys
    assert not any(".bn" in k or k.startswith("bn1") for k in keys)
    again = fuse_bn(create_model("resnet20"))
    again.load_state_dict(fused.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(again(x), fused(x), rtol=0, atol=0)


def test_sequential_pairs_and_a_bad_declared_pair():
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4))
    assert conv_bn_pairs(seq) == [("0", "1")]  # the BN after the ReLU is left alone

    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(5)

        def conv_bn_pairs(self):
            return (("conv", "bn"),)

    with pytest.raises(ValueError, match=r"bn \(5 channels\) into conv \(4 output"):
        fuse_bn(Bad())


def test_missing_extra_names_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name)
    )
    with pytest.raises(MissingExtra, match=r"onnxscript.*skiplab\[onnx\]"):
        require("onnx", "onnxscript")
    assert main(["export", "resnet20", "--format", "onnx", "--out", "x.onnx"]) == 2


def test_cli_exports_fused_safetensors(tmp_path, capsys):
    from safetensors import safe_open

    out = tmp_path / "r20.safetensors"
    assert main(["export", "resnet20", "--fuse-bn", "--out", str(out)]) == 0
    assert "folded 19 BatchNorm layers" in capsys.readouterr().out
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["fuse_bn"] == "true" and f.metadata()["model"] == '"resnet20"'
        assert f.metadata()["format"] == "pt"
        assert "conv1.bias" in set(f.keys())


def test_cli_rejects_an_unknown_format_and_source(capsys):
    assert main(["export", "resnet20", "--out", "model.bin"]) == 2
    assert "give --format" in capsys.readouterr().err
    assert main(["export", "resnet21", "--out", "model.safetensors"]) == 2
    assert "unknown model 'resnet21'" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_ONNX, reason="needs the [onnx] extra (onnx, onnxscript)")
@pytest.mark.skipif(not HAS_ORT, reason="needs onnxruntime")
@pytest.mark.parametrize("name", ["resnet20", "preact_resnet110"])
def test_onnx_export_agrees_with_eager(tmp_path, name):
    model, x = _with_bn_statistics(name)
    fused = fuse_bn(model)
    path = export_onnx(fused, tmp_path / f"{name}.onnx", x)
    check = check_onnx(model, path, x, batch_size=3)  # the unfused eager model, another batch
    assert check.batch_size == 3
    assert check.max_abs_diff <= 1e-4 * max(1.0, check.max_abs_output)


@pytest.mark.skipif(not HAS_ONNX, reason="needs the [onnx] extra (onnx, onnxscript)")
def test_cli_exports_onnx(tmp_path, capsys):
    out = tmp_path / "r20.onnx"
    assert main(["export", "resnet20", "--fuse-bn", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.stat().st_size > 100_000
    if HAS_ORT:
        assert "onnxruntime vs eager" in text


def test_onnx_export_refuses_a_token_model_by_name():
    from skiplab.export import _input_size

    with pytest.raises(ValueError, match=r"gpt_d2 is a language_modeling model.*safetensors"):
        _input_size("gpt_d2", create_model("gpt_d2"))
    assert _input_size("resnet20", create_model("resnet20")) == (3, 32, 32)
