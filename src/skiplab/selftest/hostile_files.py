"""Fault 4: malicious pickles through every path that loads a file.

Each file carries a payload whose unpickling runs the shell command ``touch SENTINEL``. It is
fed to resume (as the training-state file and disguised as the weights file, with the
manifest's digests fixed, as an attacker who can write the folder would), ``load_run`` (what
``skiplab eval``/``predict`` use), ``read_weights_file``, ``load_pretrained``, the dataset
cache, and CIFAR batch files (a folder and a ``.tar.gz``). Passing means: the sentinel does not
exist afterwards, the refusal names the file and says why, and (the control) unsafe unpickling
of the very same bytes in a forked child does create the sentinel, so the file really was
malicious.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import shutil
import tarfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from skiplab.data import load_dataset
from skiplab.models import create_model
from skiplab.models.pretrained import load_pretrained, read_weights_file
from skiplab.selftest.common import (
    FaultResult,
    Payload,
    check,
    command_for,
    error_message,
    run_trials,
    tiny_config,
    tiny_data,
)
from skiplab.selftest.inputs import write_imagefolder
from skiplab.train import Trainer, load_run

TITLE = "pickle whose payload runs a command, through every file-loading path"


def raw_pickle(sentinel: Path, **extra) -> bytes:
    return pickle.dumps({"step": 4, "optimizer": Payload(sentinel), **extra}, protocol=2)


def torch_zip(sentinel: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"step": 4, "optimizer": Payload(sentinel)}, buffer)
    return buffer.getvalue()


def control(data: bytes, kind: str, sentinel: Path) -> None:
    """Load ``data`` unsafely in a forked child: the sentinel must appear."""
    pid = os.fork()
    if pid == 0:
        try:
            if kind == "torch":
                torch.load(io.BytesIO(data), weights_only=False)
            else:
                pickle.loads(data)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    check(sentinel.exists(), "control: unsafe loading did not run the payload (broken test)")


def _refused(call: Callable[[], object], *words: str) -> str:
    message = error_message(
        call, (ValueError, FileNotFoundError), "the malicious file was loaded without an error"
    )
    for w in words:
        check(w in message, f"the error does not say {w!r}: {message}")
    return message


def _plant(folder: Path, role: str, data: bytes) -> Path:
    """Replace a file of the newest checkpoint and fix the manifest's size and digest."""
    manifest = sorted(folder.glob("step-*.json"))[-1]
    entry = json.loads(manifest.read_text())
    target = folder / entry["files"][role]["name"]
    target.write_bytes(data)
    entry["files"][role].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    manifest.write_text(json.dumps(entry))
    return target


class Trials:
    """The trials, sharing one base run folder."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.base = work / "base"
        with contextlib.redirect_stdout(io.StringIO()):
            cfg = tiny_config(self.base, steps=4, checkpoint_every=1)
            Trainer(cfg, train_data=tiny_data()).fit()

    def _run_copy(self, name: str) -> Path:
        out = self.work / name
        shutil.copytree(self.base, out)
        return out

    def resume(self, name: str, role: str, make: Callable[[Path], bytes], kind: str) -> str:
        out = self._run_copy(name)
        sentinel = self.work / f"{name}.sentinel"
        data = make(sentinel)
        target = _plant(out / "checkpoints", role, data)
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            cfg = tiny_config(out, steps=4, checkpoint_every=1)
            Trainer(cfg, train_data=tiny_data(), resume=True).fit()
        text = log.getvalue()
        check(not sentinel.exists(), "the payload ran: the sentinel exists")
        check(f"{target}" in text, f"the refusal does not name {target}: {text}")
        why = "would execute code" if role == "state" else "cannot read safetensors file"
        check(why in text, f"the refusal does not say why ({why!r}): {text}")
        check("(an older, valid one)" in text, f"resume did not fall back and say so: {text}")
        control(data, kind, sentinel)
        return text.split("is invalid: ")[1].splitlines()[0].replace(str(self.work), "...")

    def load_run(self) -> str:
        out = self._run_copy("load-run")
        sentinel = self.work / "load-run.sentinel"
        data = raw_pickle(sentinel)
        _plant(out / "checkpoints", "state", data)
        lines: list[str] = []
        run = load_run(out, report=lines.append)
        check(not sentinel.exists(), "the payload ran: the sentinel exists")
        check(run.checkpoint.name == "step-00000003.json", f"load_run used {run.checkpoint}")
        check(any("would execute code" in line for line in lines), f"not reported: {lines}")
        control(data, "pickle", sentinel)
        return lines[0].replace(str(self.work), "...")

    def weights_file(self, suffix: str, kind: str) -> str:
        sentinel = self.work / f"weights{suffix}.sentinel"
        data = torch_zip(sentinel) if kind == "torch" else raw_pickle(sentinel)
        path = self.work / f"evil{suffix}"
        path.write_bytes(data)
        why = "cannot read safetensors" if suffix == ".safetensors" else "would execute code"
        message = _refused(lambda: read_weights_file(path), str(path), why)
        check(not sentinel.exists(), "the payload ran: the sentinel exists")
        control(data, kind, sentinel)
        return message.replace(str(self.work), "...")[:160]

    def pretrained(self) -> str:
        sentinel = self.work / "pretrained.sentinel"
        data = pickle.dumps({"state_dict": {"fc.weight": Payload(sentinel)}}, protocol=2)
        path = self.work / "resnet20-evil.th"
        path.write_bytes(data)
        model = create_model("resnet20")
        message = _refused(lambda: load_pretrained(model, path), str(path), "would execute code")
        check(not sentinel.exists(), "the payload ran: the sentinel exists")
        control(data, "pickle", sentinel)
        return message.replace(str(self.work), "...")[:160]

    def cache(self) -> str:
        root = write_imagefolder(self.work / "imagefolder")
        cache = self.work / "cache"
        clean = load_dataset("imagefolder", "train", data_dir=root, cache_dir=cache)
        sentinel = self.work / "cache.sentinel"
        data = raw_pickle(sentinel)
        planted = sorted(cache.glob("*-train.safetensors"))
        check(len(planted) == 1, f"expected one cache file; got {planted}")
        planted[0].write_bytes(data)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            again = load_dataset("imagefolder", "train", data_dir=root, cache_dir=cache)
        text = " ".join(str(w.message) for w in caught)
        check(not sentinel.exists(), "the payload ran: the sentinel exists")
        check(f"cache file {planted[0]} is corrupt" in text, f"no warning naming it: {text}")
        check(torch.equal(again.images, clean.images), "the rebuilt data differ")
        control(data, "pickle", sentinel)
        return text.replace(str(self.work), "...")[:160]

    def cifar(self, archive: bool) -> str:
        name = "cifar-archive" if archive else "cifar-folder"
        sentinel = self.work / f"{name}.sentinel"
        data = raw_pickle(sentinel, labels=[0])
        folder = self.work / name / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for f in (*[f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta"):
            (folder / f).write_bytes(data)
        root = folder.parent
        if archive:
            path = root / "cifar-10-python.tar.gz"
            with tarfile.open(path, "w:gz") as tf:
                tf.add(folder, arcname="cifar-10-batches-py")
            shutil.rmtree(folder)
        message = _refused(
            lambda: load_dataset("cifar10", "train", data_dir=root),
            "refusing to unpickle",
            "asks for the global",
        )
        check(str(root) in message, f"the error does not name the file: {message}")
        check(not sentinel.exists(), "the payload ran: the sentinel exists")
        control(data, "pickle", sentinel)
        return message.replace(str(self.work), "...")[:160]


def run(work: Path, trials: int | None = None, seed: int = 0, progress=lambda: None):
    result = FaultResult("malicious-pickle", TITLE, command=command_for("malicious-pickle", None))
    t = Trials(work)
    items = [
        (
            "resume: state file (pickle)",
            lambda: t.resume("state-pickle", "state", raw_pickle, "pickle"),
        ),
        (
            "resume: state file (torch.save zip)",
            lambda: t.resume("state-zip", "state", torch_zip, "torch"),
        ),
        (
            "resume: pickle as the .safetensors",
            lambda: t.resume("weights-pickle", "weights", raw_pickle, "pickle"),
        ),
        ("load_run (eval, predict)", t.load_run),
        ("read_weights_file .pth (pickle)", lambda: t.weights_file(".pth", "pickle")),
        ("read_weights_file .pt (torch.save zip)", lambda: t.weights_file(".pt", "torch")),
        (
            "read_weights_file .safetensors (pickle)",
            lambda: t.weights_file(".safetensors", "pickle"),
        ),
        ("load_pretrained .th", t.pretrained),
        ("dataset cache file", t.cache),
        ("CIFAR batch files (folder)", lambda: t.cifar(False)),
        ("CIFAR batch files (.tar.gz)", lambda: t.cifar(True)),
    ]
    return run_trials(result, items[: trials if trials else None], progress)
