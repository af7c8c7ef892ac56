"""``skiplab export``: a network for inference, as safetensors weights or an ONNX graph.

    skiplab export resnet50 --weights resnet50.pth --fuse-bn --format onnx --out r50.onnx
    skiplab export runs/NAME --fuse-bn --format safetensors --out model.safetensors
    skiplab export runs/NAME/checkpoints/step-500.json --format onnx --out model.onnx

The source is a registered model name (random initialisation unless ``--weights`` is given)
or a run folder / checkpoint manifest. ``--fuse-bn`` folds every BatchNorm that follows a
convolution into it (:func:`skiplab.fuse.fuse_bn`). ONNX goes through
``torch.onnx.export(dynamo=True)`` with a dynamic batch dimension and needs the optional extra
``pip install 'skiplab[onnx]'`` (onnx, onnxscript; onnxruntime for the check against eager,
which runs whenever onnxruntime is installed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from skiplab.extras import MissingExtra
from skiplab.fuse import conv_bn_pairs, fuse_bn
from skiplab.models import create_model, get_model_entry, list_models
from skiplab.models.pretrained import load_pretrained
from skiplab.train.commands import key_value
from skiplab.train.evaluate import load_run

FORMATS = ("safetensors", "onnx")
ONNX_EXTRA = "pip install 'skiplab[onnx]'  (onnx, onnxscript, onnxruntime)"


def require(*modules: str) -> None:
    """Raise :class:`MissingExtra` unless every module in ``modules`` can be imported."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(f"ONNX export needs {', '.join(missing)}: {ONNX_EXTRA}")


@dataclass
class OnnxCheck:
    """Eager vs onnxruntime on one random batch: the largest absolute difference and the
    largest absolute eager output (for a relative reading)."""

    max_abs_diff: float
    max_abs_output: float
    batch_size: int


def export_safetensors(model: nn.Module, path: str | Path, metadata: dict | None = None) -> Path:
    """Write ``model.state_dict()`` as safetensors, with string ``metadata`` beside it and
    ``"format": "pt"`` (what transformers and timm loaders look for)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    text = {"format": "pt", **{k: str(v) for k, v in (metadata or {}).items()}}
    save_file(state, str(path), metadata=text)
    return path


def export_onnx(model: nn.Module, path: str | Path, example: torch.Tensor) -> Path:
    """Export ``model`` (in eval mode) with ``torch.onnx.export(dynamo=True)``; the batch
    dimension of the input ``"input"`` is dynamic, the output is ``"output"``.

    Raises:
        MissingExtra: when onnx or onnxscript is not installed.
    """
    require("onnx", "onnxscript")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        input_names=["input"],
        output_names=["output"],
        dynamic_shapes=({0: batch},),
        verbose=False,
    )
    program.save(str(path))
    return path


def check_onnx(
    model: nn.Module, path: str | Path, example: torch.Tensor, batch_size: int = 3
) -> OnnxCheck:
    """Run the ONNX file with onnxruntime (CPU) and eager ``model`` on the same random batch of
    ``batch_size`` (a size other than the export's, to exercise the dynamic batch).

    Raises:
        MissingExtra: when onnxruntime is not installed.
    """
    require("onnxruntime")
    import onnxruntime as ort  # the optional onnx extra: imported only when it is used

    x = torch.randn(batch_size, *example.shape[1:], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.eval()(x).float()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    diff = (torch.from_numpy(got) - expected).abs().max().item()
    return OnnxCheck(diff, expected.abs().max().item(), batch_size)


# -- the command ----------------------------------------------------------------------------------
def add_export_command(sub) -> None:
    """Add ``export`` to the ``skiplab`` subparsers ``sub``."""
    p = sub.add_parser(
        "export",
        help="export a model for inference (BN folding, safetensors or ONNX)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", help="registered model name, run folder, or checkpoint step-N.json")
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--format", choices=FORMATS, help="default: from the --out suffix")
    p.add_argument("--fuse-bn", action="store_true", help="fold Conv->BN pairs (inference only)")
    p.add_argument("--weights", help="weights file for a model name (.safetensors/.pth)")
    p.add_argument(
        "--model-arg",
        action="append",
        default=[],
        type=key_value,
        metavar="KEY=VALUE",
        help="option passed to create_model for a model name (VALUE read as JSON); repeatable",
    )
    p.add_argument(
        "--input-size",
        type=int,
        nargs=3,
        metavar=("C", "H", "W"),
        help="example input for ONNX (default: the model's registered input size)",
    )
    p.add_argument(
        "--no-check", action="store_true", help="skip the onnxruntime check of an ONNX export"
    )
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    fmt = args.format or _format_from_suffix(args.out)
    if fmt == "onnx":
        require("onnx", "onnxscript")  # before any model is built
    model, name, meta = _load_source(args)
    if args.fuse_bn:
        n_pairs = len(conv_bn_pairs(model))
        model = fuse_bn(model)
        print(f"folded {n_pairs} BatchNorm layers into their convolutions")
    model.eval()
    meta = {**meta, "model": name, "fuse_bn": bool(args.fuse_bn)}
    if fmt == "safetensors":
        path = export_safetensors(model, args.out, {k: json.dumps(v) for k, v in meta.items()})
        print(f"wrote {path}")
        return 0
    size = tuple(args.input_size) if args.input_size else _input_size(name, model)
    example = torch.randn(2, *size)
    path = export_onnx(model, args.out, example)
    print(f"wrote {path} (input 'input' (batch, {', '.join(map(str, size))}), dynamic batch)")
    if args.no_check:
        return 0
    if importlib.util.find_spec("onnxruntime") is None:
        print(f"onnxruntime not installed: the export was not checked ({ONNX_EXTRA})")
        return 0
    check = check_onnx(model, path, example)
    print(
        f"onnxruntime vs eager, batch {check.batch_size}: max |diff| {check.max_abs_diff:.2e} "
        f"(max |output| {check.max_abs_output:.2e})"
    )
    if not check.max_abs_diff <= 1e-4 * max(1.0, check.max_abs_output):
        print("skiplab: error: the ONNX graph does not agree with the eager model")
        return 1
    return 0


def _format_from_suffix(out: str) -> str:
    suffix = Path(out).suffix.lstrip(".")
    if suffix not in FORMATS:
        raise ValueError(f"give --format ({' or '.join(FORMATS)}); cannot tell from {out!r}")
    return suffix


def _load_source(args: argparse.Namespace) -> tuple[nn.Module, str, dict]:
    source = Path(args.source)
    if args.source in list_models():
        model_args = dict(args.model_arg)
        model = create_model(args.source, **model_args)
        meta: dict = {"model_args": model_args}
        if args.weights:
            report = load_pretrained(model, args.weights)
            meta["weights_sha256"] = report.sha256
        return model.eval(), args.source, meta
    if args.weights or args.model_arg:
        raise ValueError("--weights and --model-arg apply to a model name, not to a run")
    if source.is_dir() or source.suffix == ".json":
        manifest = source if source.suffix == ".json" else None
        run = load_run(source.parent.parent if manifest else source, manifest)
        meta = {"model_args": run.config.model_args, "checkpoint": str(run.checkpoint)}
        return run.model, run.config.model, meta
    get_model_entry(args.source)  # an unknown name: raises naming the closest ones
    raise AssertionError("unreachable")


def _input_size(name: str, model: nn.Module) -> tuple[int, int, int]:
    entry = get_model_entry(name)
    if len(entry.input_size) != 3:
        raise ValueError(
            f"ONNX export takes image models (input (C, H, W)); {name} is a {entry.task} model "
            f"whose input is {entry.input_size} token ids; export it as safetensors instead"
        )
    c, h, w = entry.input_size
    return getattr(model, "in_chans", c), h, w
