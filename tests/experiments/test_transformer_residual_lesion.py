"""transformer-residual and transformer-lesion: end to end at a tiny budget on the generated
text (lesion reusing residual's runs), the lesion measurement against a hand-built lesion, and
the claims on made-up results."""

from __future__ import annotations

import math

import pytest
import torch

from skiplab.data import make_copy_text
from skiplab.experiments import transformer_lesion, transformer_residual
from skiplab.experiments.base import Settings, load_results, run_one
from skiplab.experiments.report import build_report
from skiplab.experiments.transformer_lesion import TransformerLesion, head_of, lesion_damage
from skiplab.experiments.transformer_residual import (
    PLAN,
    TransformerResidual,
    unigram_bits,
)
from skiplab.experiments.verdict import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED
from skiplab.models import create_model
from skiplab.train import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = transformer_residual.ResidualBudget((1, 2), 6, 4, 16, 3e-3, {"n_embd": 16, "n_head": 2})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setitem(transformer_residual.BUDGETS, "quick", TINY)
    patch.setitem(transformer_lesion.BUDGETS, "quick", transformer_lesion.LesionBudget(400, 8))
    out = tmp_path_factory.mktemp("run")
    settings = Settings(out_dir=out, seeds=(1,), channels_last=True)  # text ignores it
    run_one(TransformerResidual(), settings)
    runs = sorted(p.name for p in (out / "runs").iterdir())
    run_one(TransformerLesion(), settings)
    yield out, runs
    patch.undo()


def test_every_variant_warmup_depth_and_seed_is_trained(run_dir):
    out, _ = run_dir
    results = load_results(out / "transformer-residual").results
    cells = {(r["variant"], r["warm"], r["depth"], r["seed"]) for r in results["runs"]}
    assert cells == {(v, w, d, 1) for v, w in PLAN for d in (1, 2)}
    assert results["warmup_steps"] == 1  # a tenth of 6 steps, at least one
    for r in results["runs"]:
        assert r["diverged"] is None and r["curve"][-1]["step"] == 6
    assert results["unigram_bits"] < results["uniform_bits"] == pytest.approx(math.log2(12))
    verdicts = TransformerResidual().verdicts(results)
    assert len(verdicts) == 6
    assert all(v.status == INCONCLUSIVE for v in verdicts)  # one seed never decides
    report = build_report(out, [TransformerResidual(), TransformerLesion()]).read_text()
    assert "| Post-LN | no | 2 |" in report and "| ReZero | yes | 1 |" in report
    assert "| Pre-LN-2 | 1 |" in report  # the lesion table
    for stem in (
        "transformer-residual/transformer_residual",
        "transformer-lesion/transformer_lesion",
    ):
        assert (out / f"{stem}.png").stat().st_size > 1000


def test_the_lesion_experiment_reuses_the_trained_runs(run_dir):
    out, before = run_dir
    assert sorted(p.name for p in (out / "runs").iterdir()) == before  # nothing new trained
    results = load_results(out / "transformer-lesion").results
    assert {(n["norm"], n["seed"]) for n in results["nets"]} == {("pre", 1), ("post", 1)}
    for n in results["nets"]:
        assert len(n["attn"]) == len(n["mlp"]) == len(n["both"]) == 2
        assert n["run"].endswith(f"-seed{n['seed']}") and "warm-" in n["run"]


def test_lesion_damage_matches_a_hand_built_lesion():
    """Deleting block 1's MLP by hand (a copy whose c_proj outputs zero) gives the same bits as
    the experiment's lesion; deleting a whole Pre-LN block equals a net without that block."""
    torch.manual_seed(0)
    model = create_model("gpt_d2", n_embd=16, n_head=2, block_size=8, vocab_size=12).eval()
    data = make_copy_text("val", chars=300)
    got = lesion_damage(model, data, block_size=8, batch_size=16)
    ref = create_model("gpt_d2", n_embd=16, n_head=2, block_size=8, vocab_size=12).eval()
    ref.load_state_dict(model.state_dict())
    with torch.no_grad():  # c_proj = 0 (weight and bias): the MLP branch outputs zero
        ref.blocks[1].mlp.c_proj.weight.zero_()
        ref.blocks[1].mlp.c_proj.bias.zero_()
    bits = evaluate(ref, data, batch_size=16, block_size=8)["bits_per_char"]
    assert got["mlp"][1] == pytest.approx(bits, rel=1e-6)
    one = create_model("gpt_d2", n_embd=16, n_head=2, block_size=8, vocab_size=12, n_layer=1)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("blocks.0.")}
    one.load_state_dict({k.replace("blocks.1.", "blocks.0."): v for k, v in state.items()})
    alone = evaluate(one.eval(), data, batch_size=16, block_size=8)["bits_per_char"]
    assert got["both"][0] == pytest.approx(alone, rel=1e-6)
    assert got["intact"] == pytest.approx(
        evaluate(model, data, batch_size=16, block_size=8)["bits_per_char"]
    )


def test_unigram_bits_and_head_of():
    data = make_copy_text("train", chars=100)
    counts = torch.bincount(data.tokens).double()
    p = counts[counts > 0] / 100
    assert unigram_bits(data) == pytest.approx(float(-(p * p.log2()).sum()))
    assert len(head_of(data, 40)) == 40 and len(head_of(data, 10**6)) == 100


def _curve(final: float, mean_train: float, steps: int = 10) -> list[dict]:
    loss = mean_train * math.log(2)
    return [
        {
            "step": steps,
            "lr": 1e-3,
            "train_loss": loss,
            "val_loss": final * math.log(2),
            "val_bits_per_char": final,
        }
    ]


def _results(finals: dict, seeds=(0, 1, 2), unigram=3.3) -> dict:
    """Made-up results: finals[(variant, warm, depth)] = (final bits, mean training bits)."""
    runs = []
    for (variant, warm, depth), (final, speed) in finals.items():
        for s in seeds:
            jitter = 0.01 * s
            runs.append(
                {
                    "variant": variant,
                    "warm": warm,
                    "depth": depth,
                    "seed": s,
                    "diverged": None,
                    "curve": _curve(final + jitter, speed + jitter),
                }
            )
    return {"depths": [3, 12], "unigram_bits": unigram, "uniform_bits": 6.0, "runs": runs}


def test_the_claims_follow_the_numbers():
    good = {
        ("post", True, 3): (2.0, 2.5),
        ("post", True, 12): (2.2, 2.6),
        ("post", False, 3): (2.4, 2.8),
        ("post", False, 12): (2.9, 3.0),
        ("pre", True, 3): (2.0, 2.5),
        ("pre", True, 12): (1.8, 2.4),
        ("pre", False, 3): (2.0, 2.5),
        ("pre", False, 12): (1.85, 2.4),
        ("rezero", True, 3): (2.0, 2.4),
        ("rezero", True, 12): (1.8, 2.2),
        ("plain", True, 3): (2.5, 2.9),
        ("plain", True, 12): (3.2, 3.3),
    }
    statuses = [v.status for v in TransformerResidual().verdicts(_results(good))]
    assert statuses == [REPRODUCED] * 6
    # Reversed: Post-LN better without warm-up, and a deep plain net as good as Pre-LN.
    bad = dict(good)
    bad[("post", False, 12)] = (2.0, 2.6)
    bad[("plain", True, 12)] = (1.8, 2.4)
    verdicts = TransformerResidual().verdicts(_results(bad))
    assert [verdicts[0].status, verdicts[1].status] == [NOT_REPRODUCED, NOT_REPRODUCED]
    # A Pre-LN control that never trained (above 0.9 x unigram) makes its claims INCONCLUSIVE.
    failed = dict(good)
    failed[("pre", True, 12)] = (3.1, 3.2)
    verdicts = TransformerResidual().verdicts(_results(failed))
    assert verdicts[0].status == INCONCLUSIVE and "Pre-LN-12 warm-up" in verdicts[0].note


def test_lesion_claims_follow_the_numbers():
    def net(norm, seed, intact, both):
        return {
            "norm": norm,
            "seed": seed,
            "intact": intact,
            "final_val_bits": intact,
            "attn": [intact] * 4,
            "mlp": [intact] * 4,
            "both": [intact + d for d in both],
        }

    results = {"depth": 4, "unigram_bits": 3.3, "nets": []}
    for s in (0, 1, 2):
        results["nets"] += [
            net("pre", s, 2.0, [0.05 + 0.01 * s] * 4),
            net("post", s, 2.0, [0.9 + 0.01 * s] * 4),
        ]
    statuses = [v.status for v in TransformerLesion().verdicts(results)]
    assert statuses == [REPRODUCED, REPRODUCED]
    for n in results["nets"]:
        n["both"] = [n["intact"] + 1.0] * 4  # every deletion costs a bit, for both orders
    statuses = [v.status for v in TransformerLesion().verdicts(results)]
    assert statuses == [NOT_REPRODUCED, NOT_REPRODUCED]
