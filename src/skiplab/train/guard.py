"""The guard rails of a training step: what every rank must agree on before the update.

In data-parallel training every rank must take the same branch at every step: if one rank
raised on a NaN loss, or stopped for a signal, while the others went on to the next
collective, they would wait for it until the timeout. So whatever could end the run is decided
from one vector per rank, summed over ranks by the step's one all-reduce (floats throughout):

    index   0      1       2            3       4 ... -2                -1
            loss   wrong   non-finite   count   one flag per signal     stop request
                           tensors              of ``STOP_SIGNALS``

Summing is the right reduction for each entry: ``loss / world_size`` is the mean training loss
(every rank's share of the global batch has the same size), ``wrong / count`` the training
error of the global batch (the error-driven warm-up watches it), and an entry above 0 means
"on some rank". In a world of one the sum is the vector itself.

The trainer's step (``Trainer._train_step``) uses :class:`StepGuard` on three lines: the flags
before the forward, the all-reduce after the loss, the read after the backward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from skiplab.train import distributed, runtime


@dataclass(frozen=True)
class Agreed:
    """One step's sums over ranks, as every rank reads them."""

    loss: float  # mean training loss over ranks
    wrong: float  # misclassified targets (pixels, for segmentation), summed over ranks
    count: float  # targets (pixels), summed over ranks
    non_finite: float  # tensors that held NaN or inf before this step's forward, all ranks
    signal: int | None  # the signal some rank got (the last of STOP_SIGNALS when several)
    stop: bool  # some rank got a signal or a stop request

    @property
    def error(self) -> float:
        """Training error of the global batch (0..1)."""
        return self.wrong / self.count


class StepGuard:
    """Packs this rank's part of the vector, sums it over ranks, reads the sums back."""

    def __init__(self, dist: distributed.DistInfo, device: torch.device) -> None:
        self.dist, self.device = dist, device

    def flags(self, count: int, stop_signal: int | None, stop_requested: bool) -> torch.Tensor:
        """``[count, *one flag per STOP_SIGNALS, stop_requested]`` on the device, shape
        ``(len(STOP_SIGNALS) + 2,)``.

        Called before the forward: on a GPU this host-to-device copy then does not wait
        behind the step's queued work.
        """
        flags = [float(stop_signal == s) for s in runtime.STOP_SIGNALS]
        flags.append(float(stop_requested))
        return torch.tensor([float(count), *flags], device=self.device)

    def all_reduce(
        self, loss: torch.Tensor, wrong: torch.Tensor, non_finite: torch.Tensor, flags: torch.Tensor
    ) -> torch.Tensor:
        """The whole vector (see the module docstring), summed over ranks; no host wait.

        Args:
            loss: 0-d, this rank's mean loss (detached here).
            wrong: 0-d, this rank's misclassified targets.
            non_finite: 0-d, this rank's floating-point tensors holding NaN or inf.
            flags: From :meth:`flags`.
        """
        parts = [loss.detach().float()[None], wrong.float()[None], non_finite[None].float(), flags]
        return distributed.all_reduce_sum(torch.cat(parts), self.dist)

    def read(self, sums: torch.Tensor) -> Agreed:
        """The step's one read of device values (a host synchronisation)."""
        loss_sum, wrong, non_finite, count, *flags = sums.tolist()
        signal = None
        for sig, flag in zip(runtime.STOP_SIGNALS, flags, strict=False):
            if flag > 0:
                signal = sig
        return Agreed(
            loss=loss_sum / self.dist.world_size,
            wrong=wrong,
            count=count,
            non_finite=non_finite,
            signal=signal,
            stop=any(f > 0 for f in flags),
        )
