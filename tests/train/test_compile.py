"""``torch.compile`` in the trainer: the modes train the same numbers as eager.

On a CPU the CUDA-graph modes record no graphs (inductor skips them off the GPU), so this proves
the wiring (mode passed through, a step boundary marked every step, the loss and weights equal
to eager's); the speed of CUDA graphs is measured on a GPU by ``benchmarks/gpu_suite.sh``.
"""

from __future__ import annotations

import pytest
import torch

from skiplab.train import Trainer
from skiplab.train import runtime as train_runtime

from .helpers import tiny_classification, tiny_config


def _train(tmp_path, name: str, **values) -> tuple[list[float], dict[str, torch.Tensor]]:
    losses: list[float] = []
    cfg = tiny_config(tmp_path / name, steps=3, val_split="none", **values)
    trainer = Trainer(cfg, train_data=tiny_classification(n=16), callbacks=[
        lambda t: losses.append(t.last_loss)
    ])  # fmt: skip
    trainer.fit()
    return losses, trainer.model.state_dict()


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_training_matches_eager(tmp_path, monkeypatch, mode):
    marks: list[str] = []
    real = train_runtime.begin_compiled_step
    monkeypatch.setattr(
        train_runtime, "begin_compiled_step", lambda m: (marks.append(m), real(m))[1]
    )
    eager_losses, eager_weights = _train(tmp_path, "eager")
    assert marks == []
    losses, weights = _train(tmp_path, mode, compile=True, compile_mode=mode)
    assert marks == [mode] * 3  # one step boundary per training step
    torch.testing.assert_close(losses, eager_losses, rtol=1e-4, atol=1e-5)
    for key, value in eager_weights.items():
        torch.testing.assert_close(weights[key], value, rtol=1e-3, atol=1e-4, msg=key)


def test_compile_mode_errors_name_what_was_given(tmp_path):
    with pytest.raises(ValueError, match="compile_mode must be one of .*got 'fastest'"):
        tiny_config(tmp_path, compile=True, compile_mode="fastest")
    with pytest.raises(ValueError, match="compile_mode 'reduce-overhead' needs compile=True"):
        tiny_config(tmp_path, compile_mode="reduce-overhead")
    with pytest.raises(ValueError, match="compile mode must be one of"):
        train_runtime.compile_network(torch.nn.Identity(), "fastest")
