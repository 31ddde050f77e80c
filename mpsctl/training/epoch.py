"""Training and evaluation loops shared by warm-up, search and fine-tuning.

The loss is ``cross_entropy + Σ_k strength_k · cost_k`` where the costs come from the
supernet (empty for plain training). Nothing here knows about recipes or terminals: callers
pass optimizers, schedulers and an optional per-step callback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from mpsctl.errors import UserError
from mpsctl.training.distributed import reduce_sums
from mpsctl.training.optim import StepSchedule

StepCallback = Callable[[int, float], None]


class NonFiniteLossError(UserError):
    """The loss or a cost became NaN/inf: training cannot go on meaningfully."""


@dataclass
class EpochStats:
    loss: float
    task_loss: float
    accuracy: float
    costs: dict[str, float] = field(default_factory=dict)
    #: Steps run so far in this epoch, and whether a stop request cut the epoch short.
    steps: int = 0
    interrupted: bool = False


@dataclass
class EpochTotals:
    """Running sums of an epoch, kept so an interrupted epoch can resume exactly."""

    loss: float = 0.0
    task: float = 0.0
    correct: int = 0
    seen: int = 0
    steps: int = 0
    costs: dict[str, float] = field(default_factory=dict)

    def stats(self, interrupted: bool = False) -> EpochStats:
        """Epoch averages, summed over ranks when distributed."""
        loss, task, correct, seen = reduce_sums(
            [self.loss, self.task, float(self.correct), float(self.seen)], torch.device("cpu")
        )
        seen = max(seen, 1)
        return EpochStats(
            loss=loss / seen,
            task_loss=task / seen,
            accuracy=correct / seen,
            costs={k: v / max(self.steps, 1) for k, v in self.costs.items()},
            steps=self.steps,
            interrupted=interrupted,
        )


def _check_finite(value: Tensor, what: str, epoch: int, step: int) -> None:
    if not torch.isfinite(value).all():
        raise NonFiniteLossError(
            f"{what} became non-finite at epoch {epoch + 1}, step {step + 1} "
            "(lower the cost strength or the learning rate)"
        )


def train_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizers: list[Optimizer],
    device: torch.device,
    epoch: int = 0,
    cost_strengths: Mapping[str, float] | None = None,
    cost_fn: Callable[[str], Tensor] | None = None,
    schedules: list[StepSchedule] | None = None,
    on_step: StepCallback | None = None,
    totals: EpochTotals | None = None,
    stop: Callable[[], bool] | None = None,
    penalty: Callable[[Tensor], Tensor] | None = None,
) -> tuple[EpochStats, EpochTotals]:
    """One pass over ``loader``; ``cost_fn(name)`` gives the differentiable cost ``name``;
    ``penalty(task_loss)``, called once per step, gives a further term (budget strengths).

    ``totals`` resumes an interrupted epoch: its first ``totals.steps`` batches are skipped
    (the loader must replay the same order). ``stop()`` is checked after every step; when
    it returns True the epoch ends early with ``interrupted`` set.
    """
    model.train()
    cost_strengths = dict(cost_strengths or {})
    totals = totals if totals is not None else EpochTotals()
    for name in cost_strengths:
        totals.costs.setdefault(name, 0.0)
    skip = totals.steps
    for step, (x, y) in enumerate(loader):
        if step < skip:
            continue
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        out = model(x)
        task = F.cross_entropy(out, y)
        loss = task
        for name, strength in cost_strengths.items():
            value = cost_fn(name)
            _check_finite(value, f"cost '{name}'", epoch, step)
            totals.costs[name] += float(value.detach())
            loss = loss + strength * value
        if penalty is not None:
            loss = loss + penalty(task)
        _check_finite(loss, "the loss", epoch, step)
        loss.backward()
        for opt in optimizers:
            opt.step()
        for schedule in schedules or []:
            if schedule.per_step:
                schedule.scheduler.step()
        n = y.numel()
        totals.loss += float(loss.detach()) * n
        totals.task += float(task.detach()) * n
        totals.correct += int((out.detach().argmax(1) == y).sum())
        totals.seen += n
        totals.steps += 1
        if on_step is not None:
            on_step(step, float(loss.detach()))
        if stop is not None and stop():
            return totals.stats(interrupted=True), totals
    for schedule in schedules or []:
        if not schedule.per_step:
            schedule.scheduler.step()
    return totals.stats(), totals


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device) -> dict[str, float]:
    """Accuracy (fraction) and mean cross-entropy of ``model`` in eval mode."""
    was_training = model.training
    model.eval()
    total_loss = 0.0
    correct = seen = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        out = model(x)
        total_loss += float(F.cross_entropy(out, y, reduction="sum"))
        correct += int((out.argmax(1) == y).sum())
        seen += y.numel()
    model.train(was_training)
    total_loss, correct, seen = reduce_sums([total_loss, float(correct), float(seen)], device)
    seen = max(seen, 1)
    return {"accuracy": correct / seen, "loss": total_loss / seen}
