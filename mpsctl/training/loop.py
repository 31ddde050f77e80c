"""Epoch loops that survive interruption: `last.pt` after every epoch, Ctrl-C, `--resume`.

A loop saves, after each epoch (and when Ctrl-C stops it mid-epoch), everything needed to
continue exactly: model, optimizers, schedulers, the train loader's shuffle generator as it
was when the epoch began, the RNG states, the epoch and the running sums of a cut epoch.
Resuming replays the cut epoch's batch order and skips the batches already trained on, so
on the CPU a resumed run ends where an uninterrupted one would.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DistributedSampler

from mpsctl.console import Reporter
from mpsctl.training.epoch import EpochStats, EpochTotals, train_epoch
from mpsctl.training.optim import StepSchedule
from mpsctl.training.runlog import RunLog


class StopFlag:
    """Set by SIGINT; the loop checks it after every step."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested


@contextmanager
def sigint_stops(flag: StopFlag):
    """While active, Ctrl-C asks the loop to stop after the current step (a second Ctrl-C
    interrupts at once)."""
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def rng_snapshot() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def rng_restore(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value


@dataclass
class LoopPosition:
    """Where a loop stands: the next epoch to run and, if it was cut, its progress."""

    epoch: int = 0
    totals: dict[str, Any] | None = None
    loader_state: torch.Tensor | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class EpochLoop:
    """Runs ``epochs`` epochs of ``train_epoch`` with checkpoints after each one."""

    phase: str
    model: nn.Module
    loader: torch.utils.data.DataLoader
    optimizers: list[Optimizer]
    schedules: list[StepSchedule]
    device: torch.device
    reporter: Reporter
    epochs: int
    save: Callable[[dict[str, Any]], None]
    after_epoch: Callable[[int, EpochStats], dict[str, Any]]
    before_epoch: Callable[[int], None] = lambda epoch: None
    cost_strengths: dict[str, float] = field(default_factory=dict)
    cost_fn: Callable | None = None
    penalty: Callable | None = None
    extra_state: Callable[[], dict[str, Any]] = dict
    #: Where each finished epoch is recorded (metrics.jsonl, TensorBoard), and the names
    #: of the optimizers' learning rates there; ``log_model``: whose bit-widths it shows.
    run_log: RunLog | None = None
    optimizer_names: tuple[str, ...] = ("weights",)
    log_model: nn.Module | None = None

    def state(self, position: LoopPosition) -> dict[str, Any]:
        """Everything a resume needs (saved inside ``last.pt``)."""
        return {
            "phase": self.phase,
            "epoch": position.epoch,
            "totals": position.totals,
            "loader_state": position.loader_state,
            "history": position.history,
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "schedules": [s.scheduler.state_dict() for s in self.schedules],
            "rng": rng_snapshot(),
            **self.extra_state(),
        }

    def load(self, saved: dict[str, Any]) -> LoopPosition:
        for opt, state in zip(self.optimizers, saved["optimizers"], strict=True):
            opt.load_state_dict(state)
        for schedule, state in zip(self.schedules, saved["schedules"], strict=True):
            schedule.scheduler.load_state_dict(state)
        rng_restore(saved["rng"])
        return LoopPosition(saved["epoch"], saved.get("totals"), saved.get("loader_state"),
                            list(saved.get("history", [])))

    def run(self, position: LoopPosition, stop: StopFlag) -> list[dict[str, Any]]:
        if self.run_log is None:
            return self._run(position, stop)
        self.run_log.start(self.phase, position.epoch, self.log_model)
        try:
            return self._run(position, stop)
        finally:
            self.run_log.close()

    def _learning_rates(self) -> dict[str, float]:
        return {
            self.optimizer_names[i] if i < len(self.optimizer_names) else f"opt{i}":
            float(opt.param_groups[0]["lr"]) for i, opt in enumerate(self.optimizers)
        }

    def _log_entry(self, record: dict[str, Any], stats: EpochStats, lr: dict[str, float],
                   seconds: float) -> dict[str, Any]:
        """The run log's line: the stage's record plus what every loop knows (``lr``: the
        learning rates the epoch began with)."""
        entry = {"train_loss": stats.loss, "train_task_loss": stats.task_loss,
                 "train_accuracy": stats.accuracy, **record}
        if stats.costs:
            entry["expected_cost"] = dict(stats.costs)
        if self.cost_strengths:
            entry["strength"] = dict(self.cost_strengths)
        entry["lr"] = lr
        entry["epoch_seconds"] = seconds
        return entry

    def _run(self, position: LoopPosition, stop: StopFlag) -> list[dict[str, Any]]:
        from mpsctl.errors import Interrupted

        generator = getattr(self.loader, "generator", None)
        sampler = getattr(self.loader, "sampler", None)
        for epoch in range(position.epoch, self.epochs):
            if isinstance(sampler, DistributedSampler):
                sampler.set_epoch(epoch)
            if position.loader_state is not None and generator is not None:
                generator.set_state(position.loader_state)
            start_state = generator.get_state() if generator is not None else None
            totals = EpochTotals(**position.totals) if position.totals else None
            started, lr = time.perf_counter(), self._learning_rates()
            self.before_epoch(epoch)
            steps = len(self.loader)
            label = f"{self.phase} {epoch + 1}/{self.epochs}"
            with self.reporter.progress(label, steps) as advance:
                stats, totals = train_epoch(
                    self.model, self.loader, self.optimizers, self.device, epoch,
                    self.cost_strengths, self.cost_fn, self.schedules, advance, totals, stop,
                    self.penalty,
                )
            if stats.interrupted and totals.steps < steps:
                cut = LoopPosition(epoch, asdict(totals), start_state, position.history)
                self.save(self.state(cut))
                raise Interrupted(
                    f"stopped during {self.phase} epoch {epoch + 1}, step {totals.steps}; "
                    "state saved to last.pt"
                )
            record = self.after_epoch(epoch, stats)
            position.history.append(record)
            if self.run_log is not None:  # before last.pt: a resume drops it if that fails
                self.run_log.epoch(self.phase, self._log_entry(
                    record, stats, lr, time.perf_counter() - started))
            after = generator.get_state() if generator is not None else None
            position = LoopPosition(epoch + 1, None, after, position.history)
            self.save(self.state(position))
            if stop():
                raise Interrupted(
                    f"stopped after {self.phase} epoch {epoch + 1}; state saved to last.pt"
                )
        return position.history
