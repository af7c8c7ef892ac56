"""Evaluate a U-Net run on its ISBI 2012 validation images and draw image | label | prediction.

    .venv/bin/python scripts/isbi_unet_report.py runs/unet16-isbi \
        --data-dir ../shared/data/isbi2012-membrane --out docs/results/isbi-unet

Writes, in order: ``metrics.json`` (pixel error, Rand error, Dice, IoU on the validation
split, with the run's config), ``pred-<i>.png`` for every validation image, then
``figure.png`` drawn from those files only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from skiplab.data import DeviceLoader, load_dataset  # noqa: E402
from skiplab.train import evaluate, load_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    run = load_run(args.run)
    val = load_dataset("isbi2012", "val", data_dir=args.data_dir, seed=run.config.seed)
    metrics = evaluate(run.model, val, batch_size=1)
    record = {
        "run": str(args.run),
        "checkpoint": str(run.checkpoint),
        "data": val.source,
        "validation_images": len(val),
        "metrics": metrics,
        "config": run.config.to_dict(),
        "torch": torch.__version__,
    }
    (args.out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")

    loader = DeviceLoader(val, 1, train=False)
    with torch.no_grad():
        for i, (x, _) in enumerate(loader.epoch(0)):
            pred = run.model(x).argmax(1)[0].to(torch.uint8) * 255
            Image.fromarray(pred.numpy()).save(args.out / f"pred-{i}.png")

    n = len(val)
    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n))
    for i in range(n):
        image = val.images[i, 0].numpy()
        label = (val.targets[i].numpy() * 255).astype(np.uint8)
        pred = np.asarray(Image.open(args.out / f"pred-{i}.png"))
        for ax, img, title in zip(axes[i], (image, label, pred), ("image", "label", "prediction"),
                                  strict=True):
            ax.imshow(img, cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{title} {i}", fontsize=9)
            ax.axis("off")
    fig.suptitle(
        f"U-Net on ISBI 2012 validation: pixel error {metrics['error']:.4f}, "
        f"Rand error {metrics['rand_error']:.4f}, Dice {metrics['dice']:.4f}",
        fontsize=10,
    )
    fig.savefig(args.out / "figure.png", dpi=80, bbox_inches="tight")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
