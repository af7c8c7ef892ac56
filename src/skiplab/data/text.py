"""Character-level text: tinyshakespeare and a generated sequence task, as int64 token streams.

``tinyshakespeare``: the 1,115,394-byte file ``data/tinyshakespeare/input.txt`` of the public
karpathy/char-rnn repository (Karpathy 2015), read from a path (the file, or a folder holding
``input.txt`` or ``tinyshakespeare/input.txt``) or downloaded with its SHA-256 pinned; a local
file is checked against the same SHA-256, so that the split and the vocabulary below are always
the same. Vocabulary: the 65 characters of the whole file, sorted (as nanoGPT's
``shakespeare_char``); split: the first 90% of the characters train, the last 10% val.

``synthetic-text`` (the embedded default: no download): lines ``w|w\\n`` where ``w`` is k
letters drawn uniformly from ``a..j`` (k uniform in 3..6), e.g. ``cjab|cjab``. The first copy
is noise, the second is a copy of it: a model predicts it only by attending k + 1 characters
back (how many steps a small Transformer needs for it is not measured yet). The best achievable
loss is known (:data:`SYNTHETIC_TEXT_BITS_PER_CHAR`): per line, k·log2(10) bits for the letters
and log2(4) for where ``|`` falls, over 2k + 2 characters on average, i.e.
(4.5·log2 10 + 2) / 11 = 1.54 bits per character; a model that cannot look back (a bigram
model) pays about log2(10) bits for every copied letter as well, close to twice the floor.
Train (200,000 characters) and val (20,000) come from unrelated streams of the seed.

Losses on these data are reported in bits per character: the mean next-character
cross-entropy in nats divided by ln 2 (:func:`bits_per_char`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from skiplab.config import check_int
from skiplab.data.dataset import mix_seed
from skiplab.data.download import download_file
from skiplab.data.limits import format_bytes
from skiplab.fileio import sha256_file

TASK = "language_modeling"
TINYSHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINYSHAKESPEARE_BYTES = 1_115_394
TINYSHAKESPEARE_FILE = "input.txt"
TRAIN_FRACTION = 0.9  # first 90% train, last 10% val (nanoGPT's split)
TEXT_SPLITS = ("train", "val")

SYNTHETIC_LETTERS = "abcdefghij"
SYNTHETIC_LENGTHS = (3, 4, 5, 6)
SYNTHETIC_CHARS = {"train": 200_000, "val": 20_000}
_MEAN_K = sum(SYNTHETIC_LENGTHS) / len(SYNTHETIC_LENGTHS)
SYNTHETIC_TEXT_BITS_PER_CHAR = (
    _MEAN_K * math.log2(len(SYNTHETIC_LETTERS)) + math.log2(len(SYNTHETIC_LENGTHS))
) / (2 * _MEAN_K + 2)


def bits_per_char(loss_nats: float) -> float:
    """A mean cross-entropy in nats per character, in bits per character."""
    return loss_nats / math.log(2)


@dataclass
class TextDataset:
    """One split of a character-level corpus: a stream of int64 token ids and its vocabulary.

    Attributes:
        tokens: int64 ``(N,)``, on the CPU, each in ``[0, len(vocab))``.
        vocab: The characters; token ``i`` is ``vocab[i]``. Also ``classes`` (the targets of
            next-token prediction are classes too), so that code comparing the classes of two
            splits works unchanged.
        source: Human-readable origin (path and SHA-256, or the seed).
        task: ``"language_modeling"``.

    Raises:
        ValueError: for tokens of the wrong type, shape or range, or a vocabulary with repeated
            or multi-character entries.
    """

    tokens: torch.Tensor
    vocab: tuple[str, ...]
    source: str
    task: str = field(default=TASK, init=False)

    def __post_init__(self) -> None:
        t = self.tokens
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.ndim != 1:
            got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t)
            raise ValueError(f"tokens must be an int64 tensor (N,); got {got}")
        self.vocab = tuple(self.vocab)
        if not self.vocab or len(set(self.vocab)) != len(self.vocab):
            raise ValueError(f"vocab must be distinct characters; got {self.vocab!r}")
        if any(not isinstance(c, str) or len(c) != 1 for c in self.vocab):
            raise ValueError(f"vocab must hold single characters; got {self.vocab!r}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= len(self.vocab)):
            raise ValueError(
                f"tokens must lie in [0, {len(self.vocab) - 1}] ({len(self.vocab)} characters); "
                f"got values in [{int(t.min())}, {int(t.max())}]"
            )

    @property
    def classes(self) -> tuple[str, ...]:
        return self.vocab

    def __len__(self) -> int:
        return self.tokens.numel()

    def encode(self, text: str) -> torch.Tensor:
        """Characters -> token ids (int64); a character outside the vocabulary raises."""
        index = {c: i for i, c in enumerate(self.vocab)}
        missing = sorted({c for c in text if c not in index})
        if missing:
            raise ValueError(f"characters {missing} are not in the vocabulary {self.vocab!r}")
        return torch.tensor([index[c] for c in text], dtype=torch.int64)

    def decode(self, tokens) -> str:
        """Token ids -> characters."""
        return "".join(self.vocab[int(i)] for i in tokens)

    def __repr__(self) -> str:
        return f"TextDataset({len(self)} characters, {len(self.vocab)} in vocab, {self.source!r})"


# -- tinyshakespeare ------------------------------------------------------------------------------
def find_tinyshakespeare(root: Path) -> Path | None:
    """The file itself, or ``input.txt`` / ``tinyshakespeare/input.txt`` under a folder."""
    if root.is_file():
        return root
    for candidate in (root / TINYSHAKESPEARE_FILE, root / "tinyshakespeare" / TINYSHAKESPEARE_FILE):
        if candidate.is_file():
            return candidate
    return None


def download_tinyshakespeare(root: str | Path, url: str | None = None) -> Path:
    """Fetch ``input.txt`` into ``root/tinyshakespeare/`` (verified against its SHA-256).

    Args:
        root: Folder to store it under.
        url: Override of the official URL (a mirror, or a local server in tests).
    """
    path = Path(root) / "tinyshakespeare" / TINYSHAKESPEARE_FILE
    return download_file(url or TINYSHAKESPEARE_URL, path, sha256=TINYSHAKESPEARE_SHA256)


def load_tinyshakespeare(
    split: str, root: Path, *, download: bool = False, url: str | None = None
) -> TextDataset:
    """One split of tinyshakespeare from ``root`` (file or folder), fetched with ``download``.

    Raises:
        ValueError: for an unknown split, no file at ``root`` (and no ``download``), or a file
            whose size or SHA-256 is not the pinned one.
    """
    if split not in TEXT_SPLITS:
        raise ValueError(f"tinyshakespeare has splits {list(TEXT_SPLITS)}; got {split!r}")
    path = find_tinyshakespeare(root)
    if path is None and download:
        if root.exists() and not root.is_dir():
            raise ValueError(f"download=True needs data_dir to be a folder; got the file {root}")
        path = download_tinyshakespeare(root, url)
    if path is None:
        raise ValueError(
            f"expected tinyshakespeare at {root}: the file {TINYSHAKESPEARE_FILE} (as data_dir, "
            f"in it, or in tinyshakespeare/ under it); pass download=True to fetch it from "
            f"{TINYSHAKESPEARE_URL}"
        )
    size = path.stat().st_size
    if size != TINYSHAKESPEARE_BYTES:  # checked before reading: a wrong file is never read whole
        raise ValueError(
            f"{path} is not tinyshakespeare: expected {format_bytes(TINYSHAKESPEARE_BYTES)}, "
            f"got {format_bytes(size)}"
        )
    digest = sha256_file(path)
    if digest != TINYSHAKESPEARE_SHA256:
        raise ValueError(
            f"{path} is not tinyshakespeare: expected sha256 {TINYSHAKESPEARE_SHA256}, got {digest}"
        )
    text = path.read_text(encoding="utf-8")
    vocab = tuple(sorted(set(text)))
    index = {c: i for i, c in enumerate(vocab)}
    tokens = torch.tensor([index[c] for c in text], dtype=torch.int64)
    cut = int(len(text) * TRAIN_FRACTION)
    part = tokens[:cut] if split == "train" else tokens[cut:]
    return TextDataset(
        part.clone(), vocab, f"tinyshakespeare {split}: {path} (sha256 {digest[:8]})"
    )


# -- the generated task ---------------------------------------------------------------------------
SYNTHETIC_VOCAB = tuple(sorted(SYNTHETIC_LETTERS + "|\n"))


def make_copy_text(split: str, seed: int = 0, chars: int | None = None) -> TextDataset:
    """The ``synthetic-text`` split (see the module docstring), ``chars`` characters long
    (default 200,000 for train, 20,000 for val); same seed -> the same characters."""
    if split not in TEXT_SPLITS:
        raise ValueError(f"synthetic-text has splits {list(TEXT_SPLITS)}; got {split!r}")
    check_int("seed", seed, 0)
    n = SYNTHETIC_CHARS[split] if chars is None else chars
    check_int("chars", n, 1)
    g = torch.Generator().manual_seed(mix_seed(seed, TEXT_SPLITS.index(split), 0x7E47))
    lo, hi = SYNTHETIC_LENGTHS[0], SYNTHETIC_LENGTHS[-1]
    lines, total = [], 0
    while total < n:
        # Enough lines for the rest at once: each is at most 2 * hi + 2 characters.
        count = (n - total) // (2 * lo + 2) + 1
        ks = torch.randint(lo, hi + 1, (count,), generator=g).tolist()
        letters = torch.randint(0, len(SYNTHETIC_LETTERS), (sum(ks),), generator=g).tolist()
        at = 0
        for k in ks:
            w = "".join(SYNTHETIC_LETTERS[i] for i in letters[at : at + k])
            at += k
            lines.append(f"{w}|{w}\n")
            total += 2 * k + 2
    text = "".join(lines)[:n]
    index = {c: i for i, c in enumerate(SYNTHETIC_VOCAB)}
    tokens = torch.tensor([index[c] for c in text], dtype=torch.int64)
    return TextDataset(tokens, SYNTHETIC_VOCAB, f"synthetic-text {split}: seed {seed}")


# -- batches --------------------------------------------------------------------------------------
class TextLoader:
    """Deterministic batches of ``(x, y)`` windows of a :class:`TextDataset`, on ``device``.

    ``x`` is ``tokens[i : i + block_size]`` and ``y`` the same window one character later
    (next-character targets), both int64 ``(B, block_size)``. Training batches take windows
    at random offsets, drawn from ``(seed, epoch, index)`` alone (no iterator state: batch
    ``index`` of ``epoch`` is the same whenever it is asked for); an epoch is
    ``(N - 1) // (batch_size * world_size * block_size)`` batches, about one pass over the
    characters. In a distributed run (``world_size`` processes) the windows of a global batch
    of ``batch_size * world_size`` are drawn as one, and rank ``r`` takes the ``r``-th
    ``batch_size`` of them, so the run sees the same windows for any split of the batch into
    ranks. Evaluation batches (``train=False``) cover the split once in consecutive windows,
    the last batch possibly smaller.

    Raises:
        ValueError: for a bad argument, or a split shorter than ``block_size + 1`` characters.
    """

    def __init__(
        self,
        dataset: TextDataset,
        batch_size: int,
        block_size: int,
        *,
        train: bool,
        seed: int = 0,
        device: str | torch.device = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not isinstance(dataset, TextDataset):
            raise ValueError(f"dataset must be a TextDataset; got {type(dataset).__name__}")
        check_int("batch_size", batch_size, 1)
        check_int("block_size", block_size, 1)
        check_int("seed", seed, 0)
        check_int("world_size", world_size, 1)
        check_int("rank", rank, 0, world_size - 1)
        if not train and world_size > 1:
            raise ValueError("evaluation batches are not split over ranks; use world_size=1")
        if len(dataset) < block_size + 1:
            raise ValueError(
                f"block_size {block_size} needs at least {block_size + 1} characters; "
                f"{dataset.source} has {len(dataset)}"
            )
        self.batch_size, self.block_size, self.train, self.seed = (
            batch_size,
            block_size,
            bool(train),
            seed,
        )
        self.rank, self.world_size = rank, world_size
        self.task = dataset.task
        self.device = torch.device(device)
        self.tokens = dataset.tokens.to(self.device)
        self.windows = (len(dataset) - 1) // block_size  # consecutive windows for evaluation

    def __len__(self) -> int:
        if self.train:
            return max(1, self.windows // (self.batch_size * self.world_size))
        return -(-self.windows // self.batch_size)

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``index`` of ``epoch``: ``x``, ``y`` int64 (B, block_size) on ``device``."""
        check_int("epoch", epoch, 0)
        check_int("batch index", index, 0, len(self) - 1)
        t = self.block_size
        if self.train:
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, index))
            b = self.batch_size
            everyone = torch.randint(
                0, self.tokens.numel() - t, (b * self.world_size,), generator=g
            )
            starts = everyone[self.rank * b : (self.rank + 1) * b]
        else:
            lo = index * self.batch_size
            starts = torch.arange(lo, min(lo + self.batch_size, self.windows)) * t
        offsets = starts.to(self.device)[:, None] + torch.arange(t + 1, device=self.device)
        window = self.tokens[offsets]  # (B, T + 1)
        return window[:, :-1], window[:, 1:]

    def epoch(self, epoch: int, start: int = 0):
        """Batches ``start .. len - 1`` of ``epoch``."""
        check_int("start", start, 0, len(self))
        for index in range(start, len(self)):
            yield self.batch(epoch, index)
