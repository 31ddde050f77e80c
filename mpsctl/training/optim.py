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
        schedule = make_schedule(opt, s.name, epochs, steps, s.step_size, s.gamma, s.max_lr)
    return opt, schedule


def temperature_at(epoch: int, start: float, decay: float, minimum: float = 0.0) -> float:
    """``T = start · e^(−decay · epoch)``, never below ``minimum``."""
    return max(start * math.exp(-decay * epoch), minimum)
