"""A base tester that each model family's tests subclass (segmentation_models_pytorch style).

Subclass, set ``names`` to the registered names and ``input_shape``; the tests below then run
for every name. Override ``expected_output_shape`` for segmentation models.
"""

from __future__ import annotations

import pytest
import torch

from skiplab import create_model, get_model_entry
from skiplab.models import SkipNet


class ModelTester:
    names: tuple[str, ...] = ()
    input_shape: tuple[int, int, int, int] = (2, 3, 32, 32)
    overrides: dict = {}

    def build(self, name: str, **extra) -> SkipNet:
        return create_model(name, **{**self.overrides, **extra})

    def make_input(self, name: str) -> torch.Tensor:
        return torch.randn(self.input_shape)

    def expected_output_shape(self, model, x: torch.Tensor) -> tuple[int, ...]:
        return (x.shape[0], model.num_classes)

    def test_registered(self, name):
        entry = get_model_entry(name)
        assert entry.name == name and entry.family

    def test_forward_backward(self, name):
        model = self.build(name)
        x = self.make_input(name)
        out = model(x)
        assert tuple(out.shape) == self.expected_output_shape(model, x)
        assert torch.isfinite(out).all()
        out.square().mean().backward()
        for pname, p in model.named_parameters():
            assert p.grad is not None, f"{name}: no gradient reached {pname}"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"

    def test_interface(self, name):
        model = self.build(name).eval()
        x = self.make_input(name)
        with torch.no_grad():
            full = model(x)
            split = model.forward_head(model.forward_features(x))
            feats = model.forward_intermediates(x)
        torch.testing.assert_close(full, split, rtol=0, atol=0)
        assert len(feats) == len(model.feature_info)
        for f, info in zip(feats, model.feature_info, strict=True):
            assert f.shape[1] == info.num_chs == info["num_chs"], info  # timm's dict access too
            assert f.shape[-1] == x.shape[-1] // info.reduction, info
            assert dict(info) == {
                "module": info.module,
                "num_chs": f.shape[1],
                "reduction": info.reduction,
            }
        blocks = list(model.iter_blocks())
        assert blocks, "iter_blocks yielded nothing"
        modules = dict(model.named_modules())
        for block_name, block in blocks:
            assert modules[block_name] is block

    def test_reset_classifier(self, name):
        model = self.build(name).eval()
        if get_model_entry(name).task != "classification":
            with pytest.raises(NotImplementedError, match="no classifier"):
                model.reset_classifier(3)
            return
        x = self.make_input(name)
        model.reset_classifier(3)
        assert model.get_classifier().out_features == 3 and model.num_classes == 3
        with torch.no_grad():
            assert tuple(model(x).shape) == (x.shape[0], 3)
        model.reset_classifier(0)
        assert isinstance(model.get_classifier(), torch.nn.Identity)
        with pytest.raises(ValueError, match="num_classes must be an integer >= 0; got -1"):
            model.reset_classifier(-1)

    def test_wrong_channels_raise_before_compute(self, name):
        model = self.build(name)
        if not self.overrides:
            # The registry's input size is one the model accepts (checked without computing).
            c, h, w = get_model_entry(name).input_size
            assert model.in_chans == c, get_model_entry(name)
            model.check_input(torch.empty(2, c, h, w, device="meta"))
        x = self.make_input(name)
        bad = torch.randn(x.shape[0], x.shape[1] + 1, *x.shape[2:])
        with pytest.raises(ValueError, match=rf"{name} expects input of shape .*got"):
            model(bad)
        with pytest.raises(ValueError, match="expects"):
            model(x[0])
