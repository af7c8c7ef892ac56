"""The Transformer family: a decoder-only character language model and a small Vision Transformer.

Both are stacks of one block, :class:`Block`: multi-head self-attention then an MLP, each a
residual branch (Vaswani et al. 2017, "Attention Is All You Need", arXiv:1706.03762, section
3.1). Where the LayerNorm sits, and whether the branch is added at all, are options of every
block, so that the variants compared by the papers are the same code and parameter names:

- ``norm="post"``: ``x = LN(x + F(x))``, the original block of Vaswani et al. 2017, with no
  clean identity path (every shortcut passes through a LayerNorm);
- ``norm="pre"``: ``x = x + F(LN(x))``, the Pre-LN block (Xiong et al. 2020, "On Layer
  Normalization in the Transformer Architecture", arXiv:2002.04745; GPT-2, nanoGPT): the norm
  inside the branch, the identity path untouched, the pre-activation order of He et al. 2016;
  the net then ends with a final LayerNorm (``ln_f``), which a Post-LN net does not need;
- ``norm="none"``: no LayerNorm at all (``x = x + F(x)``);
- ``rezero=True``: ``x = x + α·F(x)`` with one learned scalar α per branch started at 0
  (Bachlechner et al. 2020, "ReZero is All You Need", arXiv:2003.04887), parameters
  ``attn_gain.alpha`` and ``mlp_gain.alpha``; the paper's ReZero net is ``norm="none",
  rezero=True``, and with ``norm="pre"`` or ``"none"`` every block is exactly the identity at
  initialisation;
- ``residual=False``: the plain control, no addition (``x = F(LN(x))`` or ``x = LN(F(x))``),
  the same layers and parameter names.

Models (``depth`` in the registry counts Transformer blocks):

- ``gpt_d2``, ``gpt_d6``, ``gpt_d12``, ``gpt_d24`` (family "gpt", task "language_modeling"): a
  decoder-only character language model after nanoGPT (Karpathy; GPT-2, Radford et al. 2019):
  token and position embeddings (learned, or ``pos="sinusoidal"``: Vaswani et al.'s fixed
  sines and cosines), ``n_layer`` blocks of causal self-attention
  (``torch.nn.functional.scaled_dot_product_attention(is_causal=True)``) and a 4x MLP with GELU,
  width 128, 4 heads, context 256 characters, vocabulary 65 (tinyshakespeare's characters), and
  a linear head without bias (not tied to the embedding). Input: int64 token ids (B, T) with
  T <= ``block_size``; output: logits (B, T, vocab_size), position t seeing tokens 0..t only.
  Pre-LN by default; ``create_model("gpt_d12", norm="post")`` is the Post-LN net.
- ``vit_d2``, ``vit_d6``, ``vit_d12`` (family "vit"): a Vision Transformer (Dosovitskiy et al.
  2021, "An Image is Worth 16x16 Words", arXiv:2010.11929) for 32x32 images: 4x4 patches (64
  tokens) embedded by a 4x4 stride-4 convolution, a class token, learned positions, ``n_layer``
  blocks of (non-causal) self-attention and MLP, width 128, 4 heads, the class token's final
  state into the classifier. Input (N, 3, 32, 32) exactly (the positions are learned for 64
  patches); output (N, num_classes). Pre-LN by default, as in the paper.

Initialisation (owned by each block): linear weights normal with std ``init_std`` (0.02, as in
GPT-2 and nanoGPT), biases zero, LayerNorms at (1, 0); with ``scaled_init`` the output projection
of each branch has std ``init_std / sqrt(2 * n_layer)`` (GPT-2, Radford et al. 2019), on by
default for the GPT and off for the ViT.

``iter_blocks()`` yields the blocks (``blocks.0`` ...). A block is a
:class:`~skiplab.models._base.SkipUnit`: ``block.skip(x)`` is what it computes with both
branches deleted (``x``, or ``ln_2(ln_1(x))`` for Post-LN), which is what
:func:`skiplab.analysis.lesion.lesioned` keeps. One branch alone is deleted by making it output
zero, e.g. ``replaced_method(block.attn, "forward", torch.zeros_like)`` from
:mod:`skiplab.analysis.lesion` (the block then computes ``x + mlp(ln_2(x))`` in a Pre-LN net).
:func:`skiplab.analysis.gradient_flow.gradient_norms` works as it is;
:func:`~skiplab.analysis.gradient_flow.block_jacobian_terms` differentiates the backward pass,
which PyTorch's fused CPU attention kernel does not implement (``derivative for
aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented``); it runs the
attention on ``SDPBackend.MATH`` itself. Code of your own that takes double derivatives through
these models needs ``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)`` too.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from skiplab.config import Config, check_bool, check_int, check_real, choice
from skiplab.models._base import FeatureInfo, SkipNet, check_positive_int
from skiplab.models.variants import Variant, register_variants

NORMS = ("pre", "post", "none")


# -- the parts ------------------------------------------------------------------------------------
POSITIONS = ("learned", "sinusoidal")


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """Vaswani et al. 2017, section 3.5: PE[t, 2i] = sin(t / 10000^(2i/dim)),
    PE[t, 2i+1] = cos(t / 10000^(2i/dim)); float32 (length, dim), dim even."""
    check_positive_int("length", length)
    if not isinstance(dim, int) or dim < 2 or dim % 2:
        raise ValueError(f"sinusoidal positions need an even width >= 2; got {dim!r}")
    t = torch.arange(length, dtype=torch.float64)[:, None]  # (T, 1)
    freq = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim/2,)
    table = torch.empty(length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(t * freq)
    table[:, 1::2] = torch.cos(t * freq)
    return table.float()


class Gain(nn.Module):
    """A learned scalar ``alpha`` times the input (ReZero, Bachlechner et al. 2020); starts at
    ``init`` (0: the branch it scales starts switched off)."""

    def __init__(self, init: float = 0.0) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * x


class SelfAttention(nn.Module):
    """Multi-head self-attention (Vaswani et al. 2017, section 3.2.2): one linear map to queries,
    keys and values (``c_attn``), scaled dot-product attention per head, the output projection
    (``c_proj``). ``causal``: position t attends to positions 0..t only (a decoder)."""

    def __init__(self, n_embd: int, n_head: int, causal: bool, dropout: float) -> None:
        super().__init__()
        self.n_head, self.causal, self.dropout = n_head, causal, dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # No shape is unpacked, so that torch.fx traces it: (B, T, 3C) -> (B, T, 3, H, C/H)
        # -> (3, B, H, T, C/H).
        qkv = self.c_attn(x).unflatten(-1, (3, self.n_head, -1)).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, n_head, T, C / n_head) each
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=self.causal
        )  # (B, n_head, T, C / n_head)
        y = y.transpose(1, 2).flatten(2)  # heads side by side: (B, T, C)
        return self.resid_drop(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward network (Vaswani et al. 2017, section 3.3): Linear to
    ``ratio * n_embd``, GELU (GPT, ViT), Linear back."""

    def __init__(self, n_embd: int, ratio: int, dropout: float) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, ratio * n_embd)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(ratio * n_embd, n_embd)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C) -> (B, T, C)


class Block(nn.Module):
    """One Transformer block: self-attention, then the MLP, each a residual branch.

    Args:
        n_embd: Width C of the residual stream (B, T, C).
        n_head: Attention heads; must divide ``n_embd``.
        causal: Causal (decoder) attention.
        norm: "post" (Vaswani et al. 2017), "pre" (Xiong et al. 2020) or "none"; see the module
            docstring.
        residual: False for the plain control (no addition).
        rezero: A learned scalar, started at 0, on each branch (Bachlechner et al. 2020).
        mlp_ratio: Hidden width of the MLP over ``n_embd``.
        dropout: On the attention weights and each branch's output.
        init_std: Std of the normal initialisation of the linear weights.
        proj_std: Std of the two output projections (``init_std`` unless scaled, GPT-2).
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        *,
        causal: bool,
        norm: str = "pre",
        residual: bool = True,
        rezero: bool = False,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        init_std: float = 0.02,
        proj_std: float | None = None,
    ) -> None:
        super().__init__()
        check_block_options(n_embd, n_head, norm, residual, rezero)
        self.norm, self.residual = norm, residual
        layer_norm = (lambda: nn.LayerNorm(n_embd)) if norm != "none" else nn.Identity
        self.ln_1 = layer_norm()
        self.attn = SelfAttention(n_embd, n_head, causal, dropout)
        self.ln_2 = layer_norm()
        self.mlp = MLP(n_embd, mlp_ratio, dropout)
        self.attn_gain = Gain(0.0) if rezero else nn.Identity()
        self.mlp_gain = Gain(0.0) if rezero else nn.Identity()
        for module in self.modules():  # the block owns its initialisation
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=init_std)
                nn.init.zeros_(module.bias)
        for proj in (self.attn.c_proj, self.mlp.c_proj):
            nn.init.normal_(proj.weight, std=init_std if proj_std is None else proj_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: the residual stream (B, T, C); every line below keeps that shape.
        if not self.residual:  # the plain control: the same layers, no addition
            if self.norm == "post":
                x = self.ln_1(self.attn(x))
                return self.ln_2(self.mlp(x))
            x = self.attn(self.ln_1(x))
            return self.mlp(self.ln_2(x))
        if self.norm == "post":  # Vaswani et al. 2017: add, then normalise
            x = self.ln_1(x + self.attn_gain(self.attn(x)))
            x = self.ln_2(x + self.mlp_gain(self.mlp(x)))
            return x
        # Pre-LN (Xiong et al. 2020), or norm="none" (ln_1, ln_2 are identities): a clean
        # identity path from the block's input to its output.
        x = x + self.attn_gain(self.attn(self.ln_1(x)))
        x = x + self.mlp_gain(self.mlp(self.ln_2(x)))
        return x

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        """What the block computes with both branches deleted: ``x``, or for Post-LN
        ``ln_2(ln_1(x))`` (the shortcut passes through both norms)."""
        return self.ln_2(self.ln_1(x)) if self.norm == "post" else x

    def zero_init_last(self) -> None:
        """Zero both branches' output projections (weights and biases): each branch then
        outputs 0 and the block computes ``skip(x)``."""
        for proj in (self.attn.c_proj, self.mlp.c_proj):
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)


def check_block_options(n_embd: int, n_head: int, norm: str, residual: bool, rezero: bool) -> None:
    """The checks shared by :class:`Block` and the configs, with the expected and given values."""
    check_positive_int("n_embd", n_embd)
    check_positive_int("n_head", n_head)
    if n_embd % n_head:
        raise ValueError(
            f"n_head must divide n_embd (each head gets n_embd / n_head channels); "
            f"got n_embd={n_embd}, n_head={n_head}"
        )
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {list(NORMS)}; got {norm!r}")
    check_bool("residual", residual)
    check_bool("rezero", rezero)
    if rezero and not residual:
        raise ValueError(
            "rezero scales the residual branch of each block, and residual=False has none; "
            "got rezero=True with residual=False"
        )


# -- the configs ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _BlockOptions(Config):
    """Fields shared by both configs (see the module docstring)."""

    n_layer: int = 6
    n_head: int = 4
    n_embd: int = 128
    mlp_ratio: int = 4
    norm: str = choice("pre", NORMS)
    residual: bool = True
    rezero: bool = False
    dropout: float = 0.0
    init_std: float = 0.02
    scaled_init: bool = True

    def _check_blocks(self) -> None:
        self.check_choices()
        check_positive_int("n_layer", self.n_layer)
        check_positive_int("mlp_ratio", self.mlp_ratio)
        check_block_options(self.n_embd, self.n_head, self.norm, self.residual, self.rezero)
        check_real("dropout", self.dropout, 0, 1, high_open=True)
        check_real("init_std", self.init_std, 0, low_open=True)
        check_bool("scaled_init", self.scaled_init)

    @property
    def depth(self) -> int:
        """Transformer blocks (the registry's depth for this family)."""
        return self.n_layer

    def make_blocks(self, causal: bool) -> nn.ModuleList:
        proj_std = self.init_std / math.sqrt(2 * self.n_layer) if self.scaled_init else None
        return nn.ModuleList(
            Block(
                self.n_embd,
                self.n_head,
                causal=causal,
                norm=self.norm,
                residual=self.residual,
                rezero=self.rezero,
                mlp_ratio=self.mlp_ratio,
                dropout=self.dropout,
                init_std=self.init_std,
                proj_std=proj_std,
            )
            for _ in range(self.n_layer)
        )


@dataclass(frozen=True)
class GPTConfig(_BlockOptions):
    """A decoder-only language model.

    Attributes:
        n_layer: Blocks. n_head: Attention heads. n_embd: Width of the residual stream.
        mlp_ratio: MLP hidden width over n_embd (4).
        norm: "pre" (default), "post" or "none". residual: False for the plain control.
        rezero: A learned scalar started at 0 on every branch.
        dropout: On embeddings, attention weights and branch outputs (0).
        init_std: Std of the normal initialisation (0.02).
        scaled_init: Output projections at ``init_std / sqrt(2 * n_layer)`` (GPT-2).
        block_size: Longest sequence (context) the model takes.
        vocab_size: Tokens (65: tinyshakespeare's characters).
        pos: "learned" (a position embedding ``wpe``, GPT-2) or "sinusoidal" (the fixed
            sines and cosines of Vaswani et al. 2017, section 3.5: no parameters, a
            non-persistent buffer, so the state_dict has no ``wpe``).
    """

    block_size: int = 256
    vocab_size: int = 65
    pos: str = choice("learned", POSITIONS)

    def __post_init__(self) -> None:
        self._check_blocks()
        check_positive_int("block_size", self.block_size)
        check_positive_int("vocab_size", self.vocab_size)


@dataclass(frozen=True)
class ViTConfig(_BlockOptions):
    """A Vision Transformer for small images.

    Attributes:
        (the block fields as :class:`GPTConfig`; ``scaled_init`` off by default)
        img_size: Height and width of the (square) input.
        patch_size: Side of the square patches; must divide img_size.
        in_chans: Input channels.
        num_classes: Classifier outputs (0: no classifier, forward returns the class token).
    """

    scaled_init: bool = False
    img_size: int = 32
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 10

    def __post_init__(self) -> None:
        self._check_blocks()
        check_positive_int("img_size", self.img_size)
        check_positive_int("patch_size", self.patch_size)
        check_positive_int("in_chans", self.in_chans)
        check_int("num_classes", self.num_classes, 0)
        if self.img_size % self.patch_size:
            raise ValueError(
                f"patch_size must divide img_size; got img_size={self.img_size}, "
                f"patch_size={self.patch_size}"
            )

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2


# -- the networks ---------------------------------------------------------------------------------
class GPT(SkipNet):
    """Decoder-only language model: token ids (B, T) -> next-token logits (B, T, vocab_size).

    ``forward_features``: the residual stream after the last block and ``ln_f`` (B, T, n_embd);
    ``forward_head``: the logits; ``forward_intermediates``: every block's output (B, T, n_embd),
    one per ``feature_info`` entry (``reduction`` 1: one state per token).
    """

    input_dtype = torch.long

    def __init__(self, cfg: GPTConfig, model_name: str = "gpt") -> None:
        super().__init__()
        self.cfg = cfg
        self.model_name = model_name
        self.in_chans = 1  # one token id per position
        self.block_size = cfg.block_size
        self.vocab_size = cfg.vocab_size
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        nn.init.normal_(self.wte.weight, std=cfg.init_std)
        if cfg.pos == "learned":
            self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
            nn.init.normal_(self.wpe.weight, std=cfg.init_std)
        else:  # fixed: recomputed at construction, never saved
            table = sinusoidal_positions(cfg.block_size, cfg.n_embd)
            self.register_buffer("pos_table", table, persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = cfg.make_blocks(causal=True)
        self.ln_f = nn.LayerNorm(cfg.n_embd) if cfg.norm == "pre" else nn.Identity()
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        nn.init.normal_(self.lm_head.weight, std=cfg.init_std)
        self.num_features = cfg.n_embd
        self.feature_info = [FeatureInfo(f"blocks.{i}", cfg.n_embd, 1) for i in range(cfg.n_layer)]

    def _check_input(self, idx: torch.Tensor) -> None:
        expected = f"(B, T) with T <= {self.block_size}"
        if not isinstance(idx, torch.Tensor):
            raise ValueError(
                f"{self.model_name} expects a tensor of token ids {expected}; "
                f"got {type(idx).__name__}"
            )
        if idx.ndim != 2 or idx.shape[1] < 1:
            raise ValueError(
                f"{self.model_name} expects input of shape {expected} (token ids); "
                f"got {tuple(idx.shape)}"
            )
        if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
            raise ValueError(
                f"{self.model_name} expects integer token ids (int64); got dtype {idx.dtype}"
            )
        if idx.shape[1] > self.block_size:
            raise ValueError(
                f"{self.model_name} takes sequences of at most block_size={self.block_size} "
                f"tokens; got input of shape {tuple(idx.shape)} (T={idx.shape[1]})"
            )

    def iter_blocks(self) -> Iterator[tuple[str, nn.Module]]:
        for i, block in enumerate(self.blocks):
            yield f"blocks.{i}", block

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> token + position embeddings (B, T, n_embd), checked first."""
        self.check_input(idx)
        t = idx.shape[1]
        pos = self.wpe.weight[:t] if self.cfg.pos == "learned" else self.pos_table[:t]
        return self.drop(self.wte(idx) + pos)  # (B, T, C) + (T, C)

    def forward_intermediates(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output, (B, T, n_embd), in ``feature_info`` order."""
        x, outs = self.embed(idx), []
        for block in self.blocks:
            x = self.run_block(block, x)
            outs.append(x)
        return outs

    def forward_features(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx)
        for block in self.blocks:
            x = self.run_block(block, x)
        return self.ln_f(x)  # (B, T, n_embd)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.lm_head(x)  # (B, T, vocab_size)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample ``max_new_tokens`` tokens after ``idx`` (B, T), feeding back the last
        ``block_size`` tokens (nanoGPT); returns (B, T + max_new_tokens)."""
        check_int("max_new_tokens", max_new_tokens, 0)
        check_real("temperature", temperature, 0, low_open=True)
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.block_size :])[:, -1, :] / temperature  # (B, V)
            nxt = torch.multinomial(logits.softmax(-1), 1, generator=generator)  # (B, 1)
            idx = torch.cat([idx, nxt], dim=1)
        return idx


class VisionTransformer(SkipNet):
    """Vision Transformer (Dosovitskiy et al. 2021) for small images.

    Shapes for ``vit_d6`` at 32x32: patches (N, 128, 8, 8) -> tokens (N, 64, 128), with the
    class token (N, 65, 128) through every block; ``forward_features``: the final tokens
    (N, 65, 128); ``forward_head``: the class token (N, 128) -> logits (N, num_classes);
    ``forward_intermediates``: every block's patch tokens as maps (N, 128, 8, 8).
    """

    def __init__(self, cfg: ViTConfig, model_name: str = "vit") -> None:
        super().__init__()
        self.cfg = cfg
        self.model_name = model_name
        self.in_chans = cfg.in_chans
        self.num_classes = cfg.num_classes
        self.min_input_size = cfg.img_size  # check_input requires exactly img_size
        p, d = cfg.patch_size, cfg.n_embd
        self.patch_embed = nn.Conv2d(cfg.in_chans, d, kernel_size=p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.num_patches, d))
        for t in (self.cls_token, self.pos_embed):
            nn.init.normal_(t, std=cfg.init_std)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = cfg.make_blocks(causal=False)
        self.norm = nn.LayerNorm(d) if cfg.norm == "pre" else nn.Identity()
        self.num_features = d
        self.head = nn.Linear(d, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        if isinstance(self.head, nn.Linear):
            nn.init.normal_(self.head.weight, std=cfg.init_std)
            nn.init.zeros_(self.head.bias)
        self.feature_info = [FeatureInfo(f"blocks.{i}", d, p) for i in range(cfg.n_layer)]

    def _check_input(self, x: torch.Tensor) -> None:
        super()._check_input(x)
        s = self.cfg.img_size
        if x.shape[-2:] != (s, s):
            raise ValueError(
                f"{self.model_name} expects input of shape (N, {self.in_chans}, {s}, {s}) "
                f"(its positions are learned for {self.cfg.num_patches} patches); "
                f"got {tuple(x.shape)} (set img_size to change it)"
            )

    def iter_blocks(self) -> Iterator[tuple[str, nn.Module]]:
        for i, block in enumerate(self.blocks):
            yield f"blocks.{i}", block

    def get_classifier(self) -> nn.Module:
        return self.head

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> class token + patch tokens + positions (N, 1 + P, n_embd)."""
        self.check_input(x)
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, P, C)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (N, 1, C)
        return self.drop(torch.cat([cls, x], dim=1) + self.pos_embed)  # (N, 1 + P, C)

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every block's patch tokens as a map (N, n_embd, H/p, W/p), as timm's ViTs give them."""
        side = self.cfg.img_size // self.cfg.patch_size
        x, outs = self.embed(x), []
        for block in self.blocks:
            x = self.run_block(block, x)
            outs.append(x[:, 1:].transpose(1, 2).unflatten(2, (side, side)))  # (N, C, h, w)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = self.run_block(block, x)
        return self.norm(x)  # (N, 1 + P, n_embd)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0]  # the class token (N, n_embd)
        return x if pre_logits else self.head(x)


# -- the registered variants, as rows of data -----------------------------------------------------
CIFAR = (3, 32, 32)
TEXT = (256,)  # a sequence of block_size token ids

# name: Variant(family, default input, config, task); depth (blocks) from the config
TRANSFORMER_VARIANTS: dict[str, Variant] = {
    # Character-level GPT (nanoGPT's shakespeare_char model at width 128, 4 heads), Pre-LN.
    **{
        f"gpt_d{n}": Variant("gpt", TEXT, GPTConfig(n_layer=n), task="language_modeling")
        for n in (2, 6, 12, 24)
    },
    # Dosovitskiy et al. 2021 at CIFAR size: patch 4, width 128, 4 heads, Pre-LN.
    **{f"vit_d{n}": Variant("vit", CIFAR, ViTConfig(n_layer=n)) for n in (2, 6, 12)},
}


register_variants(
    TRANSFORMER_VARIANTS,
    {GPTConfig: GPT, ViTConfig: VisionTransformer},
    depth=lambda cfg: cfg.depth,
)
