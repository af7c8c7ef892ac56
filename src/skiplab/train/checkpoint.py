"""Checkpoints that survive crashes and never execute code when loaded.

A checkpoint is three files in ``RUN/checkpoints/``::

    step-00001234.safetensors   model weights (safetensors: no code, loadable anywhere)
    step-00001234.state.pt      training state: optimizer, schedule, RNG states, step, epoch,
                                position in the epoch, config (tensors and plain values only,
                                so it loads with torch.load(weights_only=True))
    step-00001234.json          manifest: step, epoch, position, sha256 and size of both files

Every file is written atomically (temporary file in the same folder, flush, fsync, os.replace,
fsync of the folder) and the manifest is written last, so a checkpoint without its manifest is
incomplete. Older checkpoints are pruned only after the new manifest is on disk. Loading checks
sizes and digests first, then reads with ``read_weights_file`` (safetensors or
``weights_only=True``; a file that would need unsafe unpickling is refused).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes

from skiplab.fileio import TMP_PREFIX, atomic_write, sha256_file
from skiplab.models.pretrained import read_weights_file

FORMAT = "skiplab-checkpoint-1"
_MANIFEST = re.compile(r"^step-(\d{8,})\.json$")


class InvalidCheckpoint(ValueError):
    """A checkpoint that is incomplete, truncated, corrupt or unsafe; the message says why."""


@dataclass
class LoadedCheckpoint:
    """A verified checkpoint: its manifest path and contents, weights and training state."""

    manifest_path: Path
    manifest: dict
    weights: dict[str, torch.Tensor]
    state: dict

    @property
    def step(self) -> int:
        return int(self.manifest["step"])


def clean_leftovers(folder: Path) -> list[Path]:
    """Remove temporary files and data files without a manifest (a write that was cut off).

    Returns the removed paths, for the caller to report.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    complete = {m.stem for m in folder.glob("step-*.json")}
    for p in sorted(folder.iterdir()):
        stem = p.name.split(".")[0]
        orphan = p.name.startswith("step-") and not p.name.endswith((".json", ".invalid"))
        if p.is_file() and (p.name.startswith(TMP_PREFIX) or (orphan and stem not in complete)):
            p.unlink()
            removed.append(p)
    return removed


# -- writing ---------------------------------------------------------------------------------------
def write_checkpoint(
    folder: Path,
    *,
    step: int,
    epoch: int,
    position: int,
    weights: dict[str, torch.Tensor],
    state: dict,
    meta: dict,
    keep: int,
) -> Path:
    """Write one checkpoint (weights, state, then manifest) and prune to the newest ``keep``.

    Returns the manifest path.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"step-{step:08d}"
    if (folder / f"{stem}.json").exists():  # rewriting a step: never leave a stale manifest
        remove_checkpoint(folder / f"{stem}.json")
    # safetensors wants contiguous (row-major) tensors; channels_last weights are not.
    tensors = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    files = {}
    for role, name, data in (
        # "format": "pt" tells transformers/timm loaders these are PyTorch tensors.
        ("weights", f"{stem}.safetensors", safetensors_bytes(tensors, metadata={"format": "pt"})),
        ("state", f"{stem}.state.pt", buffer.getvalue()),
    ):
        files[role] = {
            "name": name,
            "sha256": atomic_write(folder / name, data),
            "bytes": len(data),
        }
    manifest = {
        "format": FORMAT,
        "step": step,
        "epoch": epoch,
        "position": position,
        "files": files,
        "meta": meta,
    }
    path = folder / f"{stem}.json"
    atomic_write(path, json.dumps(manifest, indent=1).encode())
    for old in list_checkpoints(folder)[keep:]:
        remove_checkpoint(old)
    return path


def remove_checkpoint(manifest_path: Path) -> None:
    """Delete a checkpoint, manifest first so that it is never seen half deleted."""
    stem = manifest_path.name[: -len(".json")]
    manifest_path.unlink()
    for p in manifest_path.parent.glob(f"{stem}.*"):
        p.unlink()


# -- reading ---------------------------------------------------------------------------------------
def list_checkpoints(folder: Path) -> list[Path]:
    """Manifests in ``folder``, newest (highest step) first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _MANIFEST.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def load_checkpoint(manifest_path: Path) -> LoadedCheckpoint:
    """Verify and load one checkpoint.

    Raises:
        InvalidCheckpoint: naming the file and the reason (unreadable manifest, missing file,
            wrong size, sha256 mismatch, unsafe or corrupt content).
    """
    manifest_path = Path(manifest_path)
    try:
        manifest = json.loads(manifest_path.read_text())
        files = {role: manifest["files"][role] for role in ("weights", "state")}
        int(manifest["step"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidCheckpoint(f"{manifest_path}: unreadable manifest ({exc})") from exc
    if manifest.get("format") != FORMAT:
        raise InvalidCheckpoint(f"{manifest_path}: format {manifest.get('format')!r}, not {FORMAT}")
    for role, entry in files.items():
        path = manifest_path.parent / entry["name"]
        if not path.is_file():
            raise InvalidCheckpoint(f"{path}: missing ({role} file of {manifest_path.name})")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise InvalidCheckpoint(
                f"{path}: truncated or changed ({size} bytes, expected {entry['bytes']})"
            )
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            raise InvalidCheckpoint(
                f"{path}: sha256 mismatch (file {digest[:12]}..., "
                f"manifest {entry['sha256'][:12]}...)"
            )
    try:
        weights = read_weights_file(manifest_path.parent / files["weights"]["name"])
        state = read_weights_file(manifest_path.parent / files["state"]["name"])
    except ValueError as exc:
        raise InvalidCheckpoint(str(exc)) from exc
    if not isinstance(state, dict) or state.get("step") != manifest["step"]:
        raise InvalidCheckpoint(f"{manifest_path}: state file does not belong to this manifest")
    return LoadedCheckpoint(manifest_path, manifest, weights, state)


def load_latest(folder: Path, report=print, *, set_aside: bool = True) -> LoadedCheckpoint:
    """The newest valid checkpoint in ``folder``; invalid newer ones are reported.

    Args:
        report: Called with one line per invalid checkpoint and for the one chosen.
        set_aside: Rename the files of invalid checkpoints to ``*.invalid`` (kept for
            inspection, never considered again, never pruned in place of a valid one).

    Raises:
        ValueError: when there is no checkpoint, or none is valid (listing every reason).
    """
    folder = Path(folder)
    manifests = list_checkpoints(folder)
    if not manifests:
        raise ValueError(f"no checkpoint to resume from in {folder}")
    reasons = []
    for path in manifests:
        try:
            ckpt = load_checkpoint(path)
        except InvalidCheckpoint as exc:
            reasons.append(str(exc))
            report(f"checkpoint {path.name} is invalid: {exc}")
            if set_aside:
                stem = path.name[: -len(".json")]
                for p in list(folder.glob(f"{stem}.*")):
                    if not p.name.endswith(".invalid"):
                        p.rename(p.with_name(p.name + ".invalid"))
                report(f"  moved its files aside to {stem}.*.invalid")
            continue
        note = " (an older, valid one)" if reasons else ""
        report(
            f"using checkpoint {path}{note}: step {ckpt.step}, epoch {ckpt.manifest['epoch']}, "
            f"batch {ckpt.manifest['position']} of that epoch"
        )
        return ckpt
    raise ValueError(f"no valid checkpoint in {folder}: " + "; ".join(reasons))
