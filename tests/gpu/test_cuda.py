"""What only a GPU can check: fp16 with the gradient scaler, CUDA graphs through
``compile_mode="reduce-overhead"``, folding and the benchmark harness on CUDA.

Skipped without CUDA (CI has none); ``benchmarks/gpu_suite.py`` runs them on a lent GPU before it
measures anything. Each test compares with an independent run: eager fp32, an uninterrupted run,
the unfused model.
"""

from __future__ import annotations

import math

import pytest
import torch

from skiplab import create_model
from skiplab.bench import BenchConfig, FastPath, run_bench
from skiplab.fuse import fuse_bn
from skiplab.registry import get_model_entry
from skiplab.train import Trainer, load_latest
from tests.train.helpers import stop_at, tiny_classification, tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _weights(out) -> dict[str, torch.Tensor]:
    return load_latest(out / "checkpoints", lambda _: None).weights


def test_fp16_grad_scaler_trains_checkpoints_and_resumes(tmp_path):
    data = tiny_classification(32)
    settings = {"steps": 8, "amp": "fp16", "device": "cuda", "val_split": "none"}
    straight = Trainer(tiny_config(tmp_path / "straight", **settings), train_data=data)
    losses: list[float] = []
    straight.callbacks.append(lambda t: losses.append(t.last_loss))
    assert straight.fit().status == "finished"
    assert len(losses) == 8 and all(math.isfinite(v) for v in losses)
    scaler = load_latest(tmp_path / "straight" / "checkpoints", lambda _: None).state["scaler"]
    assert scaler is not None and scaler["scale"] > 0  # the scaler's state is checkpointed

    cfg = tiny_config(tmp_path / "resumed", **settings)
    stopped = Trainer(cfg, train_data=data, callbacks=[stop_at(3)]).fit()
    assert stopped.status == "stopped"
    assert Trainer(cfg, train_data=data, resume=True).fit().status == "finished"
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    for key, value in a.items():  # cuDNN may pick other kernels: close, not bit-identical
        torch.testing.assert_close(b[key], value, rtol=1e-3, atol=1e-4, msg=key)


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_training_on_cuda_matches_eager(tmp_path, mode):
    data = tiny_classification(32)
    settings = {"steps": 6, "device": "cuda", "val_split": "none", "augment": False}

    def run(name: str, **extra) -> list[float]:
        losses: list[float] = []
        cfg = tiny_config(tmp_path / name, **settings, **extra)
        Trainer(cfg, train_data=data, callbacks=[lambda t: losses.append(t.last_loss)]).fit()
        return losses

    eager = run("eager")
    compiled = run(mode, compile=True, compile_mode=mode)
    # Six steps: the CUDA-graph replays (from the second or third call on) train the same
    # numbers as the eager steps.
    torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(
        _weights(tmp_path / mode), _weights(tmp_path / "eager"), rtol=1e-3, atol=1e-3
    )


@pytest.mark.parametrize("name", ["resnet20", "resnet50"])
def test_folded_model_agrees_on_cuda(name):
    model = create_model(name).cuda().train()
    x = torch.randn(4, *get_model_entry(name).input_size, device="cuda")
    with torch.no_grad():
        for _ in range(3):  # give the BatchNorms running statistics other than 0 / 1
            model(x * 2 + 0.5)
    model.eval()
    fused = fuse_bn(model)
    with torch.no_grad():
        out, ref = fused(x), model(x)
    assert ((out - ref).norm() / ref.norm()).item() <= 1e-4


def test_bench_harness_on_cuda_reports_device_memory():
    cfg = BenchConfig(
        models=["resnet20"],
        modes=["train", "infer"],
        batch_sizes=[16],
        device="cuda",
        repeats=2,
        steps=2,
        warmup=1,
        num_images=64,
        fast=FastPath(channels_last=True, amp="fp16"),
    )
    record = run_bench(cfg, log=lambda _: None)
    for result in record["results"]:
        assert result["ratio"] > 0
        for side in ("skiplab", "reference"):
            assert result["memory"][side]["kind"] == "cuda max_memory_allocated"
            assert result["memory"][side]["peak_mib"] > 0
