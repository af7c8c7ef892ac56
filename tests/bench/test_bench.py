"""The benchmark harness at a tiny size: well-formed results, ratios and references.

No test here asserts a speed: only that the numbers exist, are consistent and are labelled.
"""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from skiplab import create_model
from skiplab.bench import BenchConfig, FastPath, run_bench
from skiplab.bench.config import Case
from skiplab.bench.reference import CifarResNet, reference_loader, reference_model
from skiplab.bench.runners import bench_data
from skiplab.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(batch_sizes=[4], repeats=2, steps=1, warmup=1, num_images=16, threads=1)


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_run_bench_tiny_gives_well_formed_results_and_ratios():
    cfg = BenchConfig(
        models=["resnet20"],
        modes=["train", "infer"],
        fast=FastPath(channels_last=True, amp="bf16", fuse_bn=True),
        memory=False,
        **TINY,
    )
    record = run_bench(cfg, log=lambda _: None)
    json.dumps(record)  # JSON-able as it is
    assert record["machine"]["torch"] == torch.__version__
    assert record["config"]["fast"] == {
        "channels_last": True, "amp": "bf16", "compile": False, "fuse_bn": True,
        "compile_mode": "default",
    }  # fmt: skip
    assert [(r["model"], r["mode"], r["batch"]) for r in record["results"]] == [
        ("resnet20", "train", 4),
        ("resnet20", "infer", 4),
    ]
    for r in record["results"]:
        for side in ("skiplab", "reference"):
            windows = r[side]["images_per_s"]
            assert len(windows) == 2 and all(w > 0 for w in windows)
            assert r[side]["median"] == statistics.median(windows)
        assert r["ratio"] == pytest.approx(r["skiplab"]["median"] / r["reference"]["median"])
        pairs = zip(r["skiplab"]["images_per_s"], r["reference"]["images_per_s"], strict=True)
        assert r["window_ratios"] == pytest.approx([s / f for s, f in pairs])
        assert "memory" not in r
    train, infer = record["results"]
    assert "Trainer step + DeviceLoader" in train["skiplab"]["description"]
    assert "bf16" in train["skiplab"]["description"]
    assert "DataLoader" in train["reference"]["description"]
    assert "fp32" in train["reference"]["description"]
    assert "fuse_bn" in infer["skiplab"]["description"]
    assert "fuse_bn" not in train["skiplab"]["description"]  # folding is inference only


def test_peak_memory_of_both_sides_in_child_processes():
    cfg = BenchConfig(models=["resnet20"], modes=["infer"], memory=True, **TINY)
    (result,) = run_bench(cfg, log=lambda _: None)["results"]
    for side in ("skiplab", "reference"):
        mem = result["memory"][side]
        assert 0 < mem["baseline_mib"] <= mem["peak_mib"]
        assert mem["kind"] == "child process VmHWM"


def test_cli_writes_json_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "--models", "resnet20", "--modes", "infer", "--batch-sizes", "2", "3"]
    argv += ["--repeats", "1", "--steps", "1", "--warmup", "0", "--threads", "1"]
    assert main([*argv, "--no-memory", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert [r["batch"] for r in record["results"]] == [2, 3]
    assert isinstance(record["command"], str)  # sys.argv: pytest's here
    text = capsys.readouterr().out
    assert "reference img/s" in text and "ratio" in text
    assert text.count("resnet20  infer") == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"modes": ["fit"]}, "mode must be one of"),
        ({"repeats": 0}, "repeats must be a positive integer; got 0"),
        ({"batch_sizes": [0]}, "batch size must be a positive integer; got 0"),
        ({"fast": FastPath(amp="fp16")}, "amp 'fp16' needs a CUDA device; got 'cpu'"),
    ],
)
def test_config_errors_name_what_was_given(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BenchConfig(**kwargs)


def test_compile_mode_is_named_and_shared_with_a_fast_reference():
    fast = FastPath(channels_last=True, compile=True, compile_mode="reduce-overhead", fuse_bn=True)
    assert fast.describe() == "channels_last, compile(reduce-overhead), fuse_bn, fp32"
    cfg = BenchConfig(fast=fast, reference_fast=True)
    ref = cfg.side_options("reference", "infer")
    assert (ref.compile, ref.compile_mode, ref.fuse_bn) == (True, "reduce-overhead", False)
    assert cfg.side_options("skiplab", "train").fuse_bn is False  # folding is inference only
    assert BenchConfig(fast=fast).side_options("reference", "train") == FastPath()
    with pytest.raises(ValueError, match="compile_mode 'max-autotune' needs compile=True"):
        FastPath(compile_mode="max-autotune")
    with pytest.raises(ValueError, match="compile_mode must be one of .*got 'turbo'"):
        FastPath(compile=True, compile_mode="turbo")


def test_cli_refuses_unknown_model_before_measuring(capsys):
    assert main(["bench", "--models", "resnet21", "--no-memory"]) == 2
    assert "unknown model 'resnet21'" in capsys.readouterr().err


def test_no_reference_is_a_clear_error():
    with pytest.raises(ValueError, match="no reference for 'plain20'"):
        reference_model("plain20", 10)


@pytest.mark.parametrize("name", ["resnet20", "resnet56"])
def test_cifar_reference_is_the_same_network_as_skiplab(name):
    # Same layers and parameter count, so the ratio compares implementations, not networks.
    ref, what = reference_model(name, 10)
    assert isinstance(ref, CifarResNet) and what.endswith(name[6:])
    assert _n_params(ref) == _n_params(create_model(name))
    out = ref(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_torchvision_reference_for_imagenet_nets():
    with torch.device("meta"):
        ref, what = reference_model("resnet50", 1000)
        ours = create_model("resnet50")
    assert what == "torchvision.models.resnet50"
    assert _n_params(ref) == _n_params(ours)
    assert set(ref.state_dict()) == set(ours.state_dict())


def test_reference_loader_reads_the_same_images_normalised():
    data = bench_data("resnet20", 16, seed=0)
    loader = reference_loader(data, 8, workers=0, seed=0)
    x, y = next(iter(loader))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and len(loader) == 2
    assert -5 < x.mean().item() < 5  # normalised with the data's statistics
    assert set(y.tolist()) <= set(range(10))


def test_bench_data_matches_the_model_input_size():
    data = bench_data("resnet18", 4, seed=0)
    assert data.images.shape == (4, 3, 224, 224) and data.images.dtype == torch.uint8
    assert Case("resnet18", "train", 4).model == "resnet18"


def test_bench_refuses_a_token_model_by_name():
    from skiplab.bench.runners import bench_data, image_input_size

    with pytest.raises(ValueError, match=r"image models.*gpt_d2 is a language_modeling model"):
        bench_data("gpt_d2", 4, 0)
    assert image_input_size("resnet20") == (3, 32, 32)
