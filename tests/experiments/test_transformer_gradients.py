"""transformer-gradients: end to end at a tiny budget on the generated text, the fitted ratio
against a hand computation, and the claims on made-up results."""

from __future__ import annotations

import math

import pytest
import torch

from skiplab.analysis.gradient_flow import gradient_norms
from skiplab.experiments import transformer_gradients
from skiplab.experiments.base import Settings, load_results, run_one
from skiplab.experiments.report import build_report
from skiplab.experiments.transformer_gradients import (
    TransformerGradients,
    fitted_log2_ratio,
    lm_loss,
    xavier_init_,
)
from skiplab.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setitem(
        transformer_gradients.BUDGETS,
        "quick",
        transformer_gradients.GradBudget((2, 3), 1, 2, 16, {"n_embd": 16, "n_head": 2}),
    )
    out = tmp_path_factory.mktemp("run")
    run_one(TransformerGradients(), Settings(out_dir=out, seeds=(0, 1)))
    yield out
    patch.undo()


def test_every_order_and_depth_is_measured_per_block(run_dir):
    results = load_results(run_dir / "transformer-gradients").results
    assert results["depths"] == [2, 3] and results["seeds"] == [0, 1]
    assert {(r["norm"], r["depth"], r["seed"]) for r in results["nets"]} == {
        (n, d, s) for n in ("post", "pre") for d in (2, 3) for s in (0, 1)
    }
    for r in results["nets"]:
        assert len(r["ffn_w2"]) == len(r["attn_proj"]) == len(r["block_input"]) == r["depth"]
        assert all(v > 0 for v in r["ffn_w2"])
        # The generated copy task has 12 characters: the loss at init is near ln 12.
        assert abs(r["loss"] - math.log(results["vocab"])) < 2.0
    report = build_report(run_dir, [TransformerGradients()]).read_text()
    assert report.count("| transformer-gradients |") == 2  # two seeds: INCONCLUSIVE, shown
    assert "| Post-LN | 3 |" in report and "| Pre-LN | 2 |" in report
    png = run_dir / "transformer-gradients" / "transformer_gradients.png"
    assert png.stat().st_size > 1000


def test_the_weight_norms_are_those_of_the_named_layer():
    # The experiment's W^2 is blocks.i.mlp.c_proj.weight; check one against autograd directly.
    torch.manual_seed(0)
    model = xavier_init_(create_model("gpt_d2", n_embd=16, n_head=2, vocab_size=7, block_size=8))
    x = torch.randint(0, 7, (2, 8))
    y = torch.randint(0, 7, (2, 8))
    g = gradient_norms(model, x, y, lm_loss)
    model.zero_grad()
    lm_loss(model(x), y).backward()
    name = "blocks.1.mlp.c_proj.weight"
    expected = model.get_parameter(name).grad.norm().item()
    assert g.weight[g.weight_names.index(name)] == pytest.approx(expected, rel=1e-5)
    # xavier_init_: unit-variance token embeddings, Xavier-uniform bounds on every linear.
    w = model.blocks[0].mlp.c_fc.weight
    assert w.abs().max() <= math.sqrt(6 / sum(w.shape)) + 1e-6
    assert 0.7 < model.wte.weight.std().item() < 1.3


def test_fitted_ratio_is_the_least_squares_line():
    assert fitted_log2_ratio([1.0, 2.0, 4.0, 8.0]) == pytest.approx(3.0)  # exact geometric
    assert fitted_log2_ratio([3.0, 3.0]) == pytest.approx(0.0)
    # log2 values 0, 2, 1: slope 0.5 per layer, over 2 layers -> 1.0
    assert fitted_log2_ratio([1.0, 4.0, 2.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least two layers"):
        fitted_log2_ratio([1.0])


def _results(post_growth: float, pre_growth: float) -> dict:
    def norms(depth: int, growth: float, seed: int) -> list[float]:
        return [(growth * (1 + 0.02 * seed)) ** (i / (depth - 1)) for i in range(depth)]

    nets = [
        {"norm": n, "depth": d, "seed": s, "ffn_w2": norms(d, g, s), "loss": 4.0}
        for n, g in (("post", post_growth), ("pre", pre_growth))
        for d in (6, 12)
        for s in (0, 1, 2)
    ]
    return {"depths": [6, 12], "seeds": [0, 1, 2], "nets": nets}


@pytest.mark.parametrize(
    ("post", "pre", "statuses"),
    [
        (8.0, 1.2, ["REPRODUCED", "REPRODUCED"]),  # Xiong et al.'s picture
        (1.1, 0.2, ["NOT REPRODUCED", "NOT REPRODUCED"]),  # flat Post-LN, falling Pre-LN
    ],
)
def test_claims_follow_the_fitted_ratios(post, pre, statuses):
    verdicts = TransformerGradients().verdicts(_results(post, pre))
    assert [v.status for v in verdicts] == statuses
    assert verdicts[0].values[0] == pytest.approx(math.log2(post))
    assert verdicts[1].values[0] == pytest.approx(1 - abs(math.log2(pre)))
