"""The identity construction (He et al. 2015, Section 1) against the shallow net itself."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from skiplab import create_model
from skiplab.analysis.identity import (
    deepen_with_identity,
    max_output_difference,
    set_unit_to_identity_,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise(model: nn.Module, seed: int = 1) -> nn.Module:
    # A "trained" net: every BN with running statistics and affine terms away from 0 / 1, so a
    # copy that drops or misplaces one unit would change the output.
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


def _pair(shallow: str, deep: str, **kw) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    a = _randomise(create_model(shallow, widths=(4, 8, 16), stem_width=4, **kw))
    b = _randomise(create_model(deep, widths=(4, 8, 16), stem_width=4, **kw), seed=2)
    return a, b


@pytest.mark.parametrize("shortcut", ["A", "B", "none"])
def test_deepened_net_computes_the_shallow_function(shortcut: str) -> None:
    shallow, deep = _pair("resnet20", "resnet32", shortcut=shortcut)
    x = torch.randn(4, 3, 16, 16)
    before = max_output_difference(shallow, deep, x)[0]
    assert before > 1e-2  # different nets before the construction
    deepen_with_identity(shallow, deep)
    diff, scale = max_output_difference(shallow, deep, x)
    assert scale > 0.1
    assert diff <= 1e-5 * scale
    # The first units are the shallow net's, unit by unit; the added ones are new.
    for j, sunit in enumerate(shallow.layer2):
        assert torch.equal(deep.layer2[j].conv1.weight, sunit.conv1.weight)
    assert torch.equal(deep.fc.weight, shallow.fc.weight)


def test_a_plain_added_unit_is_the_identity_on_non_negative_input_only() -> None:
    _, deep = _pair("plain20", "plain20")
    unit = set_unit_to_identity_(deep.layer1[1])
    x = torch.rand(2, 4, 8, 8)
    assert torch.allclose(unit(x), x, atol=1e-6)
    # A ReLU inside: a negative input is cut, which is why the construction needs x >= 0.
    assert not torch.allclose(unit(-x), -x)


def test_a_residual_added_unit_has_a_zero_branch() -> None:
    _, deep = _pair("resnet20", "resnet20")
    unit = set_unit_to_identity_(deep.layer3[2])
    assert torch.count_nonzero(unit.bn2.weight) == 0 and torch.count_nonzero(unit.bn2.bias) == 0
    x = torch.rand(2, 16, 4, 4)
    assert torch.equal(unit(x), x)  # relu(x + 0) = x exactly for x >= 0


def test_preact_residual_units_deepen_exactly() -> None:
    torch.manual_seed(0)
    net = {"widths": (4, 8, 16), "stem_width": 4}
    shallow = _randomise(create_model("preact_resnet110", layers=(3, 3, 3), **net))
    deep = _randomise(create_model("preact_resnet110", layers=(5, 5, 5), **net), seed=2)
    deepen_with_identity(shallow, deep)
    x = torch.randn(3, 3, 16, 16)
    diff, scale = max_output_difference(shallow, deep, x)
    assert diff <= 1e-5 * scale


def test_bad_pairs_and_units_are_refused_with_what_differs() -> None:
    shallow, deep = _pair("resnet20", "resnet32")
    with pytest.raises(ValueError, match="widths"):
        deepen_with_identity(shallow, create_model("resnet32"))
    with pytest.raises(ValueError, match="at least as many units"):
        deepen_with_identity(deep, shallow)
    with pytest.raises(ValueError, match="shortcut"):
        deepen_with_identity(shallow, _pair("plain20", "plain32")[1])
    with pytest.raises(ValueError, match="projection or padding"):
        set_unit_to_identity_(deep.layer2[0])
    with pytest.raises(ValueError, match="BasicBlock"):
        set_unit_to_identity_(
            create_model("resnet20", block="bottleneck", shortcut="none").layer1[1]
        )
    with pytest.raises(ValueError, match="skiplab ResNet"):
        deepen_with_identity(nn.Linear(2, 2), deep)  # type: ignore[arg-type]
    gated = create_model("resnet20", shortcut_variant="exclusive_gating")
    with pytest.raises(ValueError, match="identity shortcut"):
        set_unit_to_identity_(gated.layer1[1])
