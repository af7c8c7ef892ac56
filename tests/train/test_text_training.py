"""Training a character language model: TextLoader batches, the (B, T, V) loss, bits per
character, AdamW, resume, the command line, and the errors for settings that do not fit text."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from skiplab import create_model
from skiplab.cli import main
from skiplab.data import TextDataset, TextLoader, make_copy_text
from skiplab.train import Trainer, evaluate, load_latest, resolve_config
from skiplab.train.build import make_optimizer
from tests.train.helpers import stop_at, tiny_classification

# A 2-block GPT of width 32 and context 32: a training step is milliseconds.
GPT = {"model": "gpt_d2", "model_args": {"n_embd": 32, "n_head": 2, "block_size": 32}}
ADAMW = {"optimizer": "adamw", "lr": 3e-3, "betas": (0.9, 0.99), "weight_decay": 0.1}


def text_config(out, **values):
    return resolve_config(
        cli_values={
            **GPT,
            "data": "synthetic-text",
            "out": str(out),
            "batch_size": 8,
            "progress": "off",
            "device": "cpu",
            **values,
        }
    )


@pytest.fixture(scope="module")
def text():
    return make_copy_text("train", chars=6000), make_copy_text("val", chars=1500)


def periodic(n: int, period: int = 5) -> TextDataset:
    """``abcdeabcde...``: each character follows from the previous one (a bigram learns it)."""
    vocab = tuple("abcdefg"[:period])
    return TextDataset(torch.arange(n) % period, vocab, f"periodic {period}, {n} characters")


def test_trains_and_logs_bits_per_char(tmp_path):
    cfg = text_config(tmp_path, steps=40, schedule="cosine", warmup="none", **{**ADAMW, "lr": 1e-2})
    trainer = Trainer(cfg, train_data=periodic(3000), val_data=periodic(600))
    result = trainer.fit()
    assert result.status == "finished"
    # Filled in from the data and the model: the vocabulary and the model's context.
    assert trainer.cfg.model_args["vocab_size"] == 5
    assert trainer.cfg.block_size == 32
    assert trainer.cfg.val_split == "val"
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    assert last["val_bits_per_char"] == pytest.approx(last["val_loss"] / math.log(2))
    # The uniform guess costs log2 5 = 2.32 bits; the sequence is deterministic: it learned.
    assert last["val_bits_per_char"] < 0.5
    assert last["val_error"] < 0.05
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    ckpt = load_latest(tmp_path / "checkpoints", lambda _: None)
    assert ckpt.manifest["meta"]["block_size"] == 32
    assert ckpt.manifest["meta"]["task"] == "language_modeling"


def test_resume_is_bit_identical_with_adamw(tmp_path, text):
    settings = {"steps": 6, "schedule": "cosine", "warmup": "linear", "warmup_steps": 2, **ADAMW}
    straight = tmp_path / "straight"
    Trainer(text_config(straight, **settings), train_data=text[0], val_data=text[1]).fit()
    cut = tmp_path / "cut"
    first = Trainer(
        text_config(cut, **settings), train_data=text[0], val_data=text[1], callbacks=[stop_at(2)]
    ).fit()
    assert first.status == "stopped" and first.step == 3
    Trainer(text_config(cut, **settings), train_data=text[0], val_data=text[1], resume=True).fit()
    a = load_latest(straight / "checkpoints", lambda _: None)
    b = load_latest(cut / "checkpoints", lambda _: None)
    assert a.state["step"] == b.state["step"] == 6
    for k in a.weights:
        assert torch.equal(a.weights[k], b.weights[k]), k
    for i, state in a.state["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg_sq"], b.state["optimizer"]["state"][i]["exp_avg_sq"])


def test_adamw_decays_matrices_only():
    """Decoupled decay (Loshchilov & Hutter 2019) with zero gradients: every tensor of 2+
    dimensions shrinks by exactly (1 - lr * wd), biases, norms and gains do not move."""
    torch.manual_seed(0)
    model = create_model("gpt_d2", n_embd=16, n_head=2, block_size=8, vocab_size=5, rezero=True)
    cfg = resolve_config(cli_values={"optimizer": "adamw", "lr": 0.1, "weight_decay": 0.5})
    optimizer = make_optimizer(cfg, model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    kinds = set()
    for name, p in model.named_parameters():
        expected = before[name] * (1 - 0.1 * 0.5) if p.dim() >= 2 else before[name]
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-7, msg=name)
        kinds.add(p.dim() >= 2)
    assert kinds == {True, False}  # both groups were exercised


def test_evaluate_matches_a_hand_computed_cross_entropy(text):
    torch.manual_seed(1)
    model = create_model("gpt_d2", n_embd=16, n_head=2, block_size=16, vocab_size=12).eval()
    val = make_copy_text("val", chars=200)
    got = evaluate(model, val, batch_size=3, block_size=16)
    tokens, t = val.tokens, 16
    windows = (len(tokens) - 1) // t  # 12 consecutive windows, the last character left over
    x = tokens[: windows * t].view(windows, t)
    y = tokens[1 : windows * t + 1].view(windows, t)
    with torch.no_grad():
        logits = model(x)
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    assert got["loss"] == pytest.approx(float(loss), rel=1e-5)
    assert got["bits_per_char"] == pytest.approx(float(loss) / math.log(2), rel=1e-5)
    assert got["error"] == pytest.approx(float((logits.argmax(-1) != y).float().mean()))


def test_text_loader_splits_a_global_batch_over_ranks(text):
    whole = TextLoader(text[0], 8, 16, train=True, seed=3)
    parts = [TextLoader(text[0], 4, 16, train=True, seed=3, rank=r, world_size=2) for r in (0, 1)]
    assert len(parts[0]) == len(whole)
    x, y = whole.batch(1, 2)
    xs, ys = zip(*(p.batch(1, 2) for p in parts), strict=True)
    assert torch.equal(torch.cat(xs), x) and torch.equal(torch.cat(ys), y)
    with pytest.raises(ValueError, match="rank"):
        TextLoader(text[0], 4, 16, train=True, rank=2, world_size=2)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"channels_last": True}, r"\['channels_last'\] apply to images"),
        ({"tta_flip": True}, r"\['tta_flip'\] apply to images"),
        ({"block_size": 64}, "longer than the model's context of 32"),
    ],
)
def test_settings_that_do_not_fit_text_are_refused(tmp_path, text, values, match):
    with pytest.raises(ValueError, match=match):
        Trainer(text_config(tmp_path, steps=1, **values), train_data=text[0], val_data=text[1])


def test_block_size_is_refused_for_images(tmp_path):
    cfg = resolve_config(
        cli_values={
            "model": "resnet20",
            "out": str(tmp_path),
            "block_size": 32,
            "val_split": "none",
        }
    )
    with pytest.raises(ValueError, match="block_size is the window length of text data"):
        Trainer(cfg, train_data=tiny_classification(8), val_data=None)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"optimizer": "adamw", "nesterov": True}, "nesterov is an SGD option"),
        ({"betas": (0.9,)}, "betas must be two numbers"),
        ({"betas": (0.9, 1.0)}, "betas must be two numbers"),
        ({"optimizer": "adam"}, "optimizer"),
    ],
)
def test_bad_optimizer_settings(values, match):
    with pytest.raises(ValueError, match=match):
        resolve_config(cli_values=values)


def test_evaluate_text_needs_block_size(text):
    model = create_model("gpt_d2", n_embd=16, n_head=2, block_size=16, vocab_size=12)
    with pytest.raises(ValueError, match="needs block_size"):
        evaluate(model, text[1])


def test_command_line_train_eval_and_predict(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--model", "gpt_d2", "--model-arg", "n_embd=32", "--model-arg", "n_head=2"]
    args += ["--model-arg", "block_size=32", "--data", "synthetic-text", "--steps", "3"]
    args += ["--batch-size", "4", "--optimizer", "adamw", "--lr", "1e-3", "--betas", "0.9"]
    args += ["0.95", "--out", str(run), "--device", "cpu", "--progress", "off"]
    assert main(args) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["optimizer"] == "adamw" and saved["betas"] == [0.9, 0.95]
    assert saved["block_size"] == 32
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--json", "--device", "cpu"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["split"] == "val" and record["block_size"] == 32
    assert record["bits_per_char"] == pytest.approx(record["loss"] / math.log(2))
    assert "mean" not in record
    assert main(["predict", "--run", str(run), str(tmp_path), "--out", str(tmp_path / "p")]) == 2
    assert "is a language model: predict takes images" in capsys.readouterr().err


def test_train_on_the_shared_tinyshakespeare(tmp_path, shared_dir):
    """`skiplab train --data tinyshakespeare` on the real file: two steps, then the whole
    validation split (111,540 characters) evaluated in windows of 16."""
    path = shared_dir / "data" / "tinyshakespeare" / "input.txt"
    if not path.is_file():
        pytest.skip(f"tinyshakespeare not found at {path}")
    run = tmp_path / "run"
    args = ["train", "--model", "gpt_d2", "--model-arg", "n_embd=16", "--model-arg", "n_head=2"]
    args += ["--data", "tinyshakespeare", "--data-dir", str(path), "--steps", "2"]
    args += ["--batch-size", "4", "--block-size", "16", "--eval-batch-size", "512"]
    args += ["--optimizer", "adamw", "--lr", "1e-3", "--out", str(run), "--progress", "off"]
    assert main([*args, "--device", "cpu"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["model_args"]["vocab_size"] == 65 and saved["val_split"] == "val"
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    # Two steps from a random start: near the uniform guess over 65 characters (6.02 bits).
    assert 4.0 < row["val_bits_per_char"] < 6.5
