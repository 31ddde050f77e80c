"""Optimizers and learning-rate schedules by name, and the search's temperature schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


@dataclass
class StepSchedule:
    """A learning-rate scheduler and whether it steps per batch (else per epoch)."""

    scheduler: LRScheduler
    per_step: bool


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
    warmup_epochs: int = 0,
) -> StepSchedule | None:
    """``cosine`` and ``onecycle`` step per batch, ``step`` per epoch; ``none`` → None.

    With ``warmup_epochs`` the learning rate first rises linearly, batch by batch, from
    ``lr/W`` to ``lr`` over the ``W`` warm-up steps; then ``name`` runs over the remaining
    epochs as if they were the whole run (``none``: the rate stays at ``lr``).
    """
    if warmup_epochs > 0:
        if name == "onecycle":
            raise ValueError("onecycle has its own warm-up; use warmup_epochs with another")
        factor = WarmupThen(name, warmup_epochs, epochs, steps_per_epoch, step_size, gamma)
        return StepSchedule(torch.optim.lr_scheduler.LambdaLR(optimizer, factor), True)
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


class WarmupThen:
    """LR factor at batch ``s``: linear warm-up, then ``cosine``, ``step`` or constant.

    A plain object (not a closure) so the scheduler's state_dict can save and restore it.
    """

    def __init__(
        self, name: str, warmup_epochs: int, epochs: int, steps_per_epoch: int,
        step_size: int, gamma: float,
    ) -> None:
        self.name = name
        self.steps_per_epoch = max(steps_per_epoch, 1)
        self.warmup_epochs = warmup_epochs
        self.warmup_steps = warmup_epochs * self.steps_per_epoch
        self.rest = max(epochs * self.steps_per_epoch - self.warmup_steps, 1)
        self.step_size = step_size
        self.gamma = gamma

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        after = step - self.warmup_steps
        if self.name == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(after, self.rest) / self.rest))
        if self.name == "step":
            epochs_after = after // self.steps_per_epoch
            return self.gamma ** (epochs_after // self.step_size)
        return 1.0


def optimizer_for(
    params: Iterable[nn.Parameter], config: Any, epochs: int, steps: int
) -> tuple[Optimizer, StepSchedule | None]:
    """The optimizer and schedule an optimizer section describes (``torch_name``, ``lr``,
    ``weight_decay``, ``momentum`` and an optional ``schedule``), for ``epochs`` of
    ``steps`` batches."""
    opt = make_optimizer(params, config.torch_name, config.lr, config.weight_decay,
                         config.momentum)
    schedule = None
    if config.schedule is not None:
        s = config.schedule
        schedule = make_schedule(opt, s.name, epochs, steps, s.step_size, s.gamma, s.max_lr,
                                 s.warmup_epochs)
    return opt, schedule


def temperature_at(epoch: int, start: float, decay: float, minimum: float = 0.0) -> float:
    """``T = start · e^(−decay · epoch)``, never below ``minimum``."""
    return max(start * math.exp(-decay * epoch), minimum)
