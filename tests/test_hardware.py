"""``skiplab.hardware``: native bf16 from the CPU flags, and the precision each place picks."""

from __future__ import annotations

import warnings

import pytest

from skiplab import hardware
from skiplab.hardware import Processor, SlowPrecisionWarning, parse_cpuinfo, resolve_amp

EPYC_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx f16c avx2 fma bmi2
processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx f16c avx2 fma bmi2
"""
XEON_BF16 = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile
"""
# AVX-512 without the BF16 extension: oneDNN still emulates bf16 there.
SKYLAKE = "model name\t: Intel(R) Xeon(R) Gold 6148\nflags\t\t: avx2 avx512f avx512bw avx512vl\n"


@pytest.mark.parametrize(
    ("text", "model", "native"),
    [
        (EPYC_AVX2, "AMD EPYC", False),
        (XEON_BF16, "Intel(R) Xeon(R) Processor", True),
        (SKYLAKE, "Intel(R) Xeon(R) Gold 6148", False),
    ],
)
def test_native_bf16_comes_from_the_cpu_flags(text, model, native):
    cpu = parse_cpuinfo(text, "AVX2")
    assert (cpu.model, cpu.native_bf16) == (model, native)
    assert ("no native bf16" in cpu.describe()) is not native
    assert cpu.as_dict()["native_bf16"] is native


def test_no_cpuinfo_claims_no_native_bf16():
    cpu = parse_cpuinfo("", "DEFAULT")
    assert not cpu.native_bf16 and cpu.model


@pytest.fixture
def cpu_kind(monkeypatch):
    """Pretend to run on the CPU whose /proc/cpuinfo text is passed."""

    def use(text: str) -> None:
        monkeypatch.setattr(hardware, "processor", lambda: parse_cpuinfo(text, "AVX2"))

    return use


def test_auto_picks_bf16_only_with_native_support(cpu_kind):
    cpu_kind(XEON_BF16)
    assert resolve_amp("auto", "cpu") == "bf16"
    cpu_kind(EPYC_AVX2)
    assert resolve_amp("auto", "cpu") == "none"
    cpu_kind(SKYLAKE)
    assert resolve_amp("auto", "cpu") == "none"


def test_explicit_bf16_without_native_support_runs_with_a_warning(cpu_kind):
    cpu_kind(EPYC_AVX2)
    with pytest.warns(SlowPrecisionWarning, match=r"AMD EPYC.*about 8x slower than fp32"):
        assert resolve_amp("bf16", "cpu") == "bf16"
    cpu_kind(XEON_BF16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_amp("bf16", "cpu") == "bf16"
        assert resolve_amp("none", "cpu") == "none"


def test_bad_values_are_named():
    with pytest.raises(ValueError, match=r"amp must be one of \['auto', 'none', 'bf16', 'fp16'\]"):
        resolve_amp("fp8", "cpu")
    with pytest.raises(ValueError, match="amp 'fp16' needs a CUDA device; got 'cpu'"):
        resolve_amp("fp16", "cpu")


def test_every_place_that_takes_a_precision_resolves_auto(cpu_kind, tmp_path):
    from skiplab.bench.config import BenchConfig, FastPath
    from skiplab.experiments.base import Settings
    from skiplab.train.config import RECIPES, TrainConfig

    assert RECIPES["fast"]["amp"] == "auto"  # the recipe no longer hard-codes bf16
    assert TrainConfig(amp="auto").amp == "auto"  # resolved when the trainer is built
    for text, want in ((EPYC_AVX2, "none"), (XEON_BF16, "bf16")):
        cpu_kind(text)
        settings = Settings(out_dir=tmp_path, amp="auto")
        assert (settings.amp, settings.amp_asked) == (want, "auto")
        assert BenchConfig(fast=FastPath(amp="auto")).fast.amp == want


def test_the_trainer_saves_and_prints_what_it_chose(cpu_kind, tmp_path, capsys):
    import json

    from skiplab.selftest.common import tiny_data
    from skiplab.train import TrainConfig, Trainer

    cpu_kind(EPYC_AVX2)
    train = tiny_data(n=64, size=8)
    cfg = TrainConfig(
        model="resnet20",
        model_args={"layers": [1, 1, 1]},
        data="synthetic",
        val_split="none",
        steps=1,
        batch_size=32,
        amp="auto",
        device="cpu",
        progress="off",
        out=str(tmp_path / "run"),
    )
    Trainer(cfg, train_data=train).fit()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["amp"] == "none"
    first = capsys.readouterr().out.splitlines()[0]
    assert "fp32, contiguous on AMD EPYC (" in first and "no native bf16" in first


def test_processor_describes_this_machine():
    cpu = hardware.processor()
    assert isinstance(cpu, Processor) and cpu.model and cpu.capability
