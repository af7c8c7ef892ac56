"""The Transformer family: GPT and ViT through the common battery, parameter counts by hand,
causal masking, the block options (post / pre / none, residual=False, rezero) against
hand-written formulas, the analyses through iter_blocks, clear errors, compile and export."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from skiplab import create_model, get_model_entry, list_models
from skiplab.analysis.gradient_flow import block_jacobian_terms, gradient_norms
from skiplab.analysis.lesion import lesioned, replaced_method
from skiplab.complexity import count_parameters, model_row
from skiplab.models._base import SkipUnit, ZeroInitUnit
from skiplab.models.transformer import Block, GPTConfig, ViTConfig
from tests.models.model_tester import ModelTester

pytestmark = pytest.mark.usefixtures("one_thread")

GPT_NAMES = ("gpt_d2", "gpt_d6", "gpt_d12", "gpt_d24")
VIT_NAMES = ("vit_d2", "vit_d6", "vit_d12")
SMALL = {"n_embd": 32, "n_head": 2, "block_size": 16, "vocab_size": 11}


def tokens(b: int = 2, t: int = 12, vocab: int = 65) -> torch.Tensor:
    return torch.randint(0, vocab, (b, t))


class GPTTester(ModelTester):
    """The battery for a language model: token ids in, (B, T, vocab) logits out, one feature
    map per block of shape (B, T, n_embd)."""

    def make_input(self, name: str) -> torch.Tensor:
        return tokens(2, 12, 65)  # every tester keeps the default vocabulary

    def expected_output_shape(self, model, x):
        return (*x.shape, model.vocab_size)

    def test_interface(self, name):
        model = self.build(name).eval()
        x = self.make_input(name)
        with torch.no_grad():
            full = model(x)
            split = model.forward_head(model.forward_features(x))
            feats = model.forward_intermediates(x)
        torch.testing.assert_close(full, split, rtol=0, atol=0)
        assert len(feats) == len(model.feature_info) == get_model_entry(name).depth
        for f, info in zip(feats, model.feature_info, strict=True):
            assert tuple(f.shape) == (*x.shape, info.num_chs) and info.reduction == 1
        modules = dict(model.named_modules())
        blocks = list(model.iter_blocks())
        assert [n for n, _ in blocks] == [info.module for info in model.feature_info]
        for block_name, block in blocks:
            assert modules[block_name] is block and isinstance(block, SkipUnit)

    def test_wrong_channels_raise_before_compute(self, name):
        model = self.build(name)
        (t,) = get_model_entry(name).input_size
        assert t == model.block_size
        model.check_input(torch.empty(2, t, dtype=torch.long, device="meta"))
        x = self.make_input(name)
        with pytest.raises(
            ValueError, match=rf"{name} expects input of shape \(B, T\).*got \(12,\)"
        ):
            model(x[0])
        with pytest.raises(ValueError, match=rf"{name} expects integer token ids.*torch.float32"):
            model(x.float())
        long = torch.zeros(1, model.block_size + 1, dtype=torch.long)
        with pytest.raises(
            ValueError, match=rf"at most block_size={model.block_size} tokens.*T={t + 1}"
        ):
            model(long)


class TestGPT(GPTTester):
    names = GPT_NAMES


class TestGPTPostLN(GPTTester):
    names = ("gpt_d2",)
    overrides = {"norm": "post"}


class TestGPTReZero(GPTTester):
    names = ("gpt_d2",)
    overrides = {"norm": "none", "rezero": True}


class TestGPTPlain(GPTTester):
    names = ("gpt_d2",)
    overrides = {"residual": False}


class TestGPTSinusoidal(GPTTester):
    names = ("gpt_d2",)
    overrides = {"pos": "sinusoidal"}


class TestViT(ModelTester):
    names = VIT_NAMES


class TestViTPostLNReZero(ModelTester):
    names = ("vit_d2",)
    overrides = {"norm": "post", "rezero": True}


# -- registry and sizes ---------------------------------------------------------------------------
def test_registry_rows():
    assert list_models("gpt*") == list(GPT_NAMES)
    assert list_models("vit*") == list(VIT_NAMES)
    for name, depth in zip(GPT_NAMES, (2, 6, 12, 24), strict=True):
        entry = get_model_entry(name)
        assert (entry.family, entry.task, entry.depth, entry.input_size) == (
            "gpt",
            "language_modeling",
            depth,
            (256,),
        )
        assert len(create_model(name).blocks) == depth
    for name, depth in zip(VIT_NAMES, (2, 6, 12), strict=True):
        entry = get_model_entry(name)
        assert (entry.family, entry.task, entry.depth, entry.input_size) == (
            "vit",
            "classification",
            depth,
            (3, 32, 32),
        )


def gpt_params(n_layer, d=128, vocab=65, t=256, norm="pre", rezero=False) -> int:
    """By hand: embeddings, per block c_attn (d x 3d + 3d), c_proj (d x d + d), c_fc
    (d x 4d + 4d), mlp c_proj (4d x d + d), two LayerNorms (2d each, not with norm="none"),
    two ReZero scalars; the final LayerNorm (pre only); the head (d x vocab, no bias)."""
    ln = 0 if norm == "none" else 2 * d
    block = (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d) + 2 * ln
    block += 2 if rezero else 0
    final = 2 * d if norm == "pre" else 0
    return vocab * d + t * d + n_layer * block + final + d * vocab


def vit_params(n_layer, d=128, classes=10, patch=4, norm="pre", rezero=False) -> int:
    """By hand: patch convolution (3 * p * p * d + d), class token, 65 positions, the blocks
    as for the GPT, the final LayerNorm (pre only), the classifier (d x classes + classes)."""
    block = 12 * d * d + 13 * d - (0 if norm != "none" else 4 * d) + (2 if rezero else 0)
    final = 2 * d if norm == "pre" else 0
    tokens_ = (32 // patch) ** 2 + 1
    return (
        (3 * patch * patch * d + d)
        + d
        + tokens_ * d
        + n_layer * block
        + final
        + d * classes
        + classes
    )


@pytest.mark.parametrize("name", GPT_NAMES)
def test_gpt_parameter_count_by_hand(name):
    n = get_model_entry(name).depth
    assert count_parameters(create_model(name)) == gpt_params(n)
    assert gpt_params(2) == 446_208  # d = 128: 12 d^2 + 13 d = 198,272 per block


def test_the_models_table_counts_parameters_and_macs():
    row = model_row("gpt_d2")  # the `skiplab models` columns, built on the meta device
    assert (row.params, row.input_size) == (gpt_params(2), (256,))
    # 12 d^2 per token per block in the linear maps, 2 T^2 d per block in attention, d * vocab
    # per token in the head.
    d, t, v = 128, 256, 65
    assert row.macs == 2 * (12 * d * d * t + 2 * t * t * d) + d * v * t


@pytest.mark.parametrize(
    ("norm", "rezero"), [("pre", False), ("post", False), ("none", False), ("none", True)]
)
def test_parameter_count_of_every_option(norm, rezero):
    gpt = create_model("gpt_d6", norm=norm, rezero=rezero)
    assert count_parameters(gpt) == gpt_params(6, norm=norm, rezero=rezero)
    assert count_parameters(create_model("gpt_d6", norm=norm, residual=False)) == gpt_params(
        6, norm=norm
    )
    vit = create_model("vit_d6", norm=norm, rezero=rezero)
    assert count_parameters(vit) == vit_params(6, norm=norm, rezero=rezero)


def test_sinusoidal_positions_are_vaswanis_and_have_no_parameters():
    from skiplab.models.transformer import sinusoidal_positions

    table = sinusoidal_positions(3, 4)
    # PE[t, 2i] = sin(t / 10000^(2i/4)), PE[t, 2i+1] = cos(...): frequencies 1 and 1/100.
    expected = torch.tensor([math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)])
    torch.testing.assert_close(table[2], expected)
    assert torch.equal(table[0], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    model = create_model("gpt_d2", pos="sinusoidal", **SMALL)
    learned = create_model("gpt_d2", **SMALL)
    assert "wpe.weight" not in model.state_dict() and "pos_table" not in model.state_dict()
    assert count_parameters(learned) - count_parameters(model) == 16 * 32  # block_size x n_embd
    x = tokens(2, 5, 11)
    with torch.no_grad():  # the embedding is the token embedding plus the fixed table
        emb = model.embed(x)
    torch.testing.assert_close(emb, model.wte(x) + sinusoidal_positions(16, 32)[:5])
    with pytest.raises(ValueError, match="pos must be one of"):
        create_model("gpt_d2", pos="rotary")
    with pytest.raises(ValueError, match="even width"):
        create_model("gpt_d2", pos="sinusoidal", n_embd=3, n_head=1)


def test_vit_parameter_count_by_hand():
    assert count_parameters(create_model("vit_d6")) == vit_params(6) == 1_205_898
    assert count_parameters(create_model("vit_d2", num_classes=100)) == vit_params(2, classes=100)


# -- causal masking -------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["pre", "post", "none"])
def test_a_future_token_does_not_change_earlier_logits(norm):
    # init_std 0.2: without LayerNorm (norm="none") the default 0.02 makes a token's effect on
    # later logits too small to tell from rounding.
    model = create_model("gpt_d2", norm=norm, init_std=0.2, **SMALL).eval()
    x = tokens(2, 16, 11)
    y = x.clone()
    y[:, 9] = (x[:, 9] + 1) % 11  # change token 9 only
    with torch.no_grad():
        a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :9], b[:, :9], rtol=0, atol=1e-6)
    assert (a[:, 9:] - b[:, 9:]).abs().amax(dim=-1).min() > 1e-4  # token 9 on: every one moves


def test_the_vit_attends_everywhere():
    model = create_model("vit_d2").eval()
    x = torch.randn(1, 3, 32, 32)
    y = x.clone()
    y[..., -4:, -4:] += 1.0  # the last patch only
    with torch.no_grad():
        fa, fb = model.forward_features(x), model.forward_features(y)
    assert (fa - fb).abs().amax(dim=-1).min() > 1e-5  # every token, the first included


# -- the block options against hand-written formulas ---------------------------------------------
def block_pair(**kw) -> tuple[Block, torch.Tensor]:
    """A small Block in float64 and an input (B, T, C) for it."""
    torch.manual_seed(0)
    block = Block(16, 2, causal=True, **kw).double()
    return block, torch.randn(2, 5, 16, dtype=torch.float64)


def test_pre_and_post_blocks_compute_their_equations():
    pre, x = block_pair(norm="pre")
    post = Block(16, 2, causal=True, norm="post").double()
    for m in (pre.ln_1, pre.ln_2):  # LayerNorms away from (1, 0), so that they matter
        torch.nn.init.normal_(m.weight, 1.0, 0.3)
        torch.nn.init.normal_(m.bias, 0.0, 0.3)
    post.load_state_dict(pre.state_dict(), strict=True)  # the same parameters and names
    h = x + pre.attn(pre.ln_1(x))
    torch.testing.assert_close(pre(x), h + pre.mlp(pre.ln_2(h)), rtol=0, atol=0)
    h = pre.ln_1(x + pre.attn(x))
    torch.testing.assert_close(post(x), pre.ln_2(h + pre.mlp(h)), rtol=0, atol=0)
    assert (pre(x) - post(x)).abs().max() > 0.1  # post and pre differ


def test_post_and_pre_models_differ_with_the_same_weights():
    pre = create_model("gpt_d2", **SMALL).eval()
    post = create_model("gpt_d2", norm="post", **SMALL).eval()
    state = {k: v for k, v in pre.state_dict().items() if not k.startswith("ln_f")}
    post.load_state_dict(state, strict=True)  # Post-LN has no final LayerNorm
    x = tokens(2, 8, 11)
    with torch.no_grad():
        assert (pre(x) - post(x)).abs().max() > 1e-3


@pytest.mark.parametrize("norm", ["pre", "post", "none"])
def test_residual_false_has_no_addition(norm):
    plain, x = block_pair(norm=norm, residual=False)
    res = Block(16, 2, causal=True, norm=norm).double()
    res.load_state_dict(plain.state_dict(), strict=True)  # the same layers and names
    if norm == "post":
        expected = plain.ln_2(plain.mlp(plain.ln_1(plain.attn(x))))
    else:
        expected = plain.mlp(plain.ln_2(plain.attn(plain.ln_1(x))))
    torch.testing.assert_close(plain(x), expected, rtol=0, atol=0)
    assert (plain(x) - res(x)).abs().max() > 0.1
    # The plain block's output does not carry its input: scaling x away leaves it bounded
    # in Pre-LN (LayerNorm in front), while the residual block's output grows with x.
    if norm == "pre":
        big = 1e3 * x
        assert plain(big).abs().max() < 10 and res(big).abs().max() > 100


@pytest.mark.parametrize("norm", ["pre", "none"])
def test_rezero_is_the_identity_at_initialisation(norm):
    block, x = block_pair(norm=norm, rezero=True)
    assert torch.equal(block(x), x)
    model = create_model("gpt_d6", norm=norm, rezero=True, **SMALL)
    idx = tokens(2, 10, 11)
    emb = model.embed(idx)
    for out in model.forward_intermediates(idx):
        assert torch.equal(out, emb)
    # ... and the scalars learn: the loss reaches every alpha.
    F.cross_entropy(model(idx).flatten(0, 1), idx.flatten()).backward()
    for _, b in model.iter_blocks():
        assert b.attn_gain.alpha.grad.abs() > 0 and b.mlp_gain.alpha.grad.abs() > 0
    names = [n for n, _ in model.named_parameters() if n.endswith("alpha")]
    assert len(names) == 12 and names[0] == "blocks.0.attn_gain.alpha"


def test_rezero_with_post_ln_starts_as_the_shortcut():
    block, x = block_pair(norm="post", rezero=True)
    torch.testing.assert_close(block(x), block.ln_2(block.ln_1(x)), rtol=0, atol=0)
    torch.testing.assert_close(block(x), block.skip(x), rtol=0, atol=0)


@pytest.mark.parametrize("norm", ["pre", "post", "none"])
def test_zero_init_last_starts_every_block_at_its_shortcut(norm):
    block, x = block_pair(norm=norm)
    assert isinstance(block, ZeroInitUnit) and not torch.equal(block(x), block.skip(x))
    block.zero_init_last()
    torch.testing.assert_close(block(x), block.skip(x), rtol=0, atol=0)


def test_scaled_init_of_the_output_projections():
    torch.manual_seed(0)
    model = create_model("gpt_d24", n_embd=64)
    std = model.blocks[0].mlp.c_proj.weight.std().item()
    assert std == pytest.approx(0.02 / (2 * 24) ** 0.5, rel=0.05)
    assert model.blocks[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    vit = create_model("vit_d12")  # off for the ViT
    assert vit.blocks[0].mlp.c_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)


# -- the analyses, unchanged ----------------------------------------------------------------------
def lm_loss(logits, y):
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


def test_lesion_keeps_the_shortcut_and_one_branch_can_be_deleted():
    model = create_model("gpt_d2", **SMALL).eval()
    x = tokens(2, 8, 11)
    with torch.no_grad():
        emb = model.embed(x)
        h1 = model.blocks[1](emb)  # block 0 deleted: block 1 sees the embedding
        with lesioned(model, ["blocks.0"]):
            torch.testing.assert_close(model.forward_intermediates(x)[1], h1, rtol=0, atol=0)
        block = model.blocks[0]
        with replaced_method(block.attn, "forward", torch.zeros_like):  # attention only
            torch.testing.assert_close(block(emb), emb + block.mlp(block.ln_2(emb)))
        with pytest.raises(ValueError, match="residual=False"):
            with lesioned(create_model("gpt_d2", residual=False, **SMALL), ["blocks.0"]):
                pass


def test_gradient_flow_through_iter_blocks():
    model = create_model("gpt_d6", **SMALL)
    x = tokens(4, 16, 11)
    norms = gradient_norms(model, x, torch.roll(x, -1, 1), loss_fn=lm_loss)
    assert norms.block_names == [f"blocks.{i}" for i in range(6)]
    assert all(v > 0 for v in norms.block_input)
    # Jacobian-vector products differentiate the backward pass, which PyTorch's fused CPU
    # attention kernel does not implement: block_jacobian_terms runs attention on the math
    # kernel itself, so it works as it is.
    rezero = create_model("gpt_d2", norm="none", rezero=True, **SMALL)
    terms = block_jacobian_terms(rezero, x)
    assert terms.residual == [0.0, 0.0]  # ReZero at init: every block is exactly the identity
    assert terms.total == pytest.approx([1.0, 1.0])
    pre = block_jacobian_terms(create_model("gpt_d2", **SMALL), x)
    assert all(0 < r < 10 for r in pre.residual)  # a Pre-LN block: identity plus its branches
    vit = create_model("vit_d2")
    vnorms = gradient_norms(vit, torch.randn(2, 3, 32, 32), torch.tensor([1, 2]))
    assert vnorms.block_names == ["blocks.0", "blocks.1"]


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"norm": "middle"}, r"norm must be one of \['pre', 'post', 'none'\]; got 'middle'"),
        ({"n_head": 5}, r"n_head must divide n_embd .*got n_embd=128, n_head=5"),
        ({"rezero": True, "residual": False}, r"got rezero=True with residual=False"),
        ({"residual": 0}, r"residual must be True or False; got 0"),
        ({"n_layer": 0}, r"n_layer must be a positive integer; got 0"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\); got 1.0"),
        ({"block_size": 0}, r"block_size must be a positive integer; got 0"),
        ({"n_layers": 3}, r"unknown option\(s\) \['n_layers'\] for GPTConfig.*n_layer"),
    ],
)
def test_bad_options_name_expected_and_given(overrides, message):
    with pytest.raises(ValueError, match=message):
        create_model("gpt_d2", **overrides)


def test_bad_vit_options_and_input():
    with pytest.raises(ValueError, match="patch_size must divide img_size; got img_size=32, "):
        create_model("vit_d2", patch_size=5)
    with pytest.raises(ValueError, match=r"vit_d2 expects input of shape \(N, 3, 32, 32\).*64"):
        create_model("vit_d2")(torch.randn(1, 3, 64, 64))
    model = create_model("vit_d2", img_size=16, patch_size=2)
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 10)
    assert GPTConfig().block_size == 256 and ViTConfig().scaled_init is False


def test_generate_extends_the_sequence():
    model = create_model("gpt_d2", **SMALL).eval()
    g = torch.Generator().manual_seed(0)
    out = model.generate(tokens(2, 3, 11), 20, generator=g)  # past block_size=16: a window
    assert out.shape == (2, 23) and out.dtype == torch.long and out.max() < 11


def test_grad_checkpointing_gives_the_same_gradients():
    model = create_model("gpt_d2", **SMALL)
    x = tokens(2, 8, 11)
    lm_loss(model(x), x).backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    lm_loss(model(x), x).backward()
    for a, p in zip(plain, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, a)


# -- compile and export ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "x"), [("gpt_d2", tokens(2, 12, 11)), ("vit_d2", torch.randn(2, 3, 32, 32))]
)
def test_compile_fullgraph_and_export_match_eager(name, x):
    extra = SMALL if name.startswith("gpt") else {"n_embd": 32, "n_head": 2}
    model = create_model(name, **extra).eval()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(compiled(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(exported.module()(x), expected, rtol=1e-5, atol=1e-5)
