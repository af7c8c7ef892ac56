"""Learning curve of resnet20 on the synthetic dataset: run by hand, not part of the suite.

    OMP_NUM_THREADS=1 .venv/bin/python -m tests.data.synthetic_learning_curve [STEPS]

SGD (lr 0.1, momentum 0.9, no weight decay), batch 128 with the DeviceLoader's augmentation,
on the default synthetic dataset (seed 0, 5,000 train / 1,000 test). Every 25 steps it prints
the accuracy of the last 25 (augmented) training batches; every 50 steps the accuracy of the
model in eval mode on the whole training set and on the test set. The claim it checks (in
skiplab.data.synthetic): training accuracy passes 90% only after a few hundred steps.
"""

from __future__ import annotations

import itertools
import sys
import time

import torch
import torch.nn.functional as F

import skiplab
from skiplab.data import DeviceLoader, load_dataset


def accuracy(model: torch.nn.Module, loader: DeviceLoader) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader.epoch(0):
            correct += int((model(x).argmax(1) == y).sum())
    model.train()
    return correct / loader.num_samples


def main(max_steps: int = 600) -> int | None:
    torch.manual_seed(0)
    start = time.time()
    train = load_dataset("synthetic", "train", seed=0)
    test = load_dataset("synthetic", "test", seed=0)
    print(f"generated train and test in {time.time() - start:.1f} s", flush=True)
    loader = DeviceLoader(train, 128, train=True, seed=0)
    eval_train = DeviceLoader(train, 500, train=False)
    eval_test = DeviceLoader(test, 500, train=False)
    model = skiplab.create_model("resnet20")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    step, correct, seen, first_90 = 0, 0, 0, None
    start = time.time()
    for epoch in itertools.count():
        for x, y in loader.epoch(epoch):
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
            if step % 25 == 0:
                line = f"step {step:4d} loss {loss.item():.3f} batch-acc {correct / seen:.3f}"
                correct = seen = 0
                if step % 50 == 0:
                    train_acc = accuracy(model, eval_train)
                    line += f" train-acc {train_acc:.3f} test-acc {accuracy(model, eval_test):.3f}"
                    if train_acc >= 0.9 and first_90 is None:
                        first_90 = step
                print(f"{line} [{time.time() - start:.0f} s]", flush=True)
            if step >= max_steps:
                print(f"first step with train-acc >= 0.90: {first_90}")
                return first_90
    return None  # unreachable: the loop ends at max_steps


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 600)
