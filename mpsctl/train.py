"""Training and evaluation loops shared by warm-up, search and fine-tuning.

The loss is ``cross_entropy + Σ_k strength_k · cost_k`` where the costs come from the
supernet (empty for plain training). Nothing here knows about recipes or terminals: callers
pass optimizers, schedulers and an optional per-step callback.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from mpsctl.errors import UserError

StepCallback = Callable[[int, float], None]


class NonFiniteLossError(UserError):
    """The loss or a cost became NaN/inf: training cannot go on meaningfully."""


@dataclass
class StepSchedule:
    """A learning-rate scheduler and whether it steps per batch (else per epoch)."""

    scheduler: LRScheduler
    per_step: bool


@dataclass
class EpochStats:
    loss: float
    task_loss: float
    accuracy: float
    costs: dict[str, float] = field(default_factory=dict)


def make_optimizer(
    params: Iterable[nn.Parameter],
    name: str,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float | None = None,
) -> Optimizer:
    """Any ``torch.optim`` class by its exact class name (e.g. ``Adam``, ``SGD``)."""
    kwargs: dict = {"lr": lr, "weight_decay": weight_decay}
    if momentum is not None:
        kwargs["momentum"] = momentum
    return getattr(torch.optim, name)(list(params), **kwargs)


def make_schedule(
    optimizer: Optimizer,
    name: str,
    epochs: int,
    steps_per_epoch: int,
    step_size: int = 10,
    gamma: float = 0.1,
    max_lr: float | None = None,
) -> StepSchedule | None:
    """``cosine`` and ``onecycle`` step per batch, ``step`` per epoch; ``none`` → None."""
    total = max(epochs * steps_per_epoch, 1)
    if name == "cosine":
        return StepSchedule(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total), True)
    if name == "onecycle":
        peak = max_lr if max_lr is not None else optimizer.param_groups[0]["lr"]
        return StepSchedule(
            torch.optim.lr_scheduler.OneCycleLR(optimizer, peak, total_steps=total), True
        )
    if name == "step":
        return StepSchedule(torch.optim.lr_scheduler.StepLR(optimizer, step_size, gamma), False)
    return None


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
) -> EpochStats:
    """One pass over ``loader``; ``cost_fn(name)`` gives the differentiable cost ``name``."""
    model.train()
    cost_strengths = dict(cost_strengths or {})
    total_loss = total_task = 0.0
    correct = seen = 0
    cost_sums = dict.fromkeys(cost_strengths, 0.0)
    steps = 0
    for step, (x, y) in enumerate(loader):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        out = model(x)
        task = F.cross_entropy(out, y)
        loss = task
        for name, strength in cost_strengths.items():
            value = cost_fn(name)
            _check_finite(value, f"cost '{name}'", epoch, step)
            cost_sums[name] += float(value.detach())
            loss = loss + strength * value
        _check_finite(loss, "the loss", epoch, step)
        loss.backward()
        for opt in optimizers:
            opt.step()
        for schedule in schedules or []:
            if schedule.per_step:
                schedule.scheduler.step()
        n = y.numel()
        total_loss += float(loss.detach()) * n
        total_task += float(task.detach()) * n
        correct += int((out.detach().argmax(1) == y).sum())
        seen += n
        steps += 1
        if on_step is not None:
            on_step(step, float(loss.detach()))
    for schedule in schedules or []:
        if not schedule.per_step:
            schedule.scheduler.step()
    seen = max(seen, 1)
    return EpochStats(
        loss=total_loss / seen,
        task_loss=total_task / seen,
        accuracy=correct / seen,
        costs={k: v / max(steps, 1) for k, v in cost_sums.items()},
    )


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
    seen = max(seen, 1)
    return {"accuracy": correct / seen, "loss": total_loss / seen}


def temperature_at(epoch: int, start: float, decay: float, minimum: float = 0.0) -> float:
    """``T = start · e^(−decay · epoch)``, never below ``minimum``."""
    return max(start * math.exp(-decay * epoch), minimum)
