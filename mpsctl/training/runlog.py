"""Run tracking: ``metrics.jsonl`` and, optionally, TensorBoard event files, one entry per epoch.

Every epoch loop (warm-up, search, fine-tuning) hands its finished epoch to one
:class:`RunLog`, which appends one JSON object to ``<run_dir>/metrics.jsonl``: ``stage``,
``epoch`` (1-based within the stage), the training losses and accuracy, what the stage
evaluates (soft and argmax accuracy, validation loss, hard cost per cost model,
temperature), the cost ``strength``, each optimizer's ``lr`` as the epoch began, and
the time (``epoch_seconds``; ``wall_time``, Unix time when the line was written). Each line
is one ``write`` on a file opened for appending, then flushed to disk, so a reader following
the file never sees half a line from a live run.

The file always agrees with the checkpoints: when a stage starts at epoch ``e`` (0 for a
fresh start, the saved position for ``--resume``), lines of that stage after epoch ``e`` and
every line of the stages after it are dropped first, so a resumed run continues the file
without duplicate epochs and a restarted search does not leave an old fine-tuning behind.

With TensorBoard on, the same numbers are written as scalars (nested fields as ``cost/…``,
``lr/…``) plus a histogram of each layer's per-channel weight bit-widths and each activation
quantizer's bits, under ``<run_dir>/tb/<stage>/``. Only the main process of a torchrun job
writes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from mpsctl.errors import MissingPackageError

#: Epoch loops in the order a run goes through them.
PHASES = ("warmup", "search", "finetune")
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tb"
TENSORBOARD_MISSING = (
    "log.tensorboard needs the tensorboard package: pip install 'mpsctl[log]' "
    "(or leave log.tensorboard off)"
)


class RunLog:
    """Writes a run's per-epoch records (pass it to the epoch loops; no global state)."""

    def __init__(self, run_dir: Path, tensorboard: bool = False, enabled: bool = True) -> None:
        """``enabled``: false on the other ranks of a torchrun job (they write nothing)."""
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        self.enabled = enabled
        self.model = None
        self._writer_class = None
        self._writer = None
        if tensorboard and enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise MissingPackageError(TENSORBOARD_MISSING) from None
            self._writer_class = SummaryWriter

    @property
    def tensorboard(self) -> bool:
        return self._writer_class is not None

    # -- stages -------------------------------------------------------------------------------
    def start(self, stage: str, epoch: int, model=None) -> None:
        """``stage`` begins (again) after ``epoch`` finished epochs: forget what came later.
        ``model``: the Supernet (searched or fixed) whose bit-widths TensorBoard shows."""
        self.model = model
        if not self.enabled:
            return
        later = PHASES[PHASES.index(stage) + 1:] if stage in PHASES else ()
        self._truncate(stage, epoch, later)
        for name in later:
            shutil.rmtree(self.run_dir / TENSORBOARD_DIR / name, ignore_errors=True)
        self.close()
        if self.tensorboard:
            # purge_step hides events of this stage from step epoch+1 on, left by the
            # interrupted (or overwritten) run.
            self._writer = self._writer_class(
                log_dir=str(self.run_dir / TENSORBOARD_DIR / stage), purge_step=epoch + 1
            )

    def epoch(self, stage: str, record: dict[str, Any]) -> None:
        """Append one epoch's record (its ``epoch`` is 1-based within ``stage``)."""
        if not self.enabled:
            return
        entry = _finite({"stage": stage, "epoch": record["epoch"], **record,
                         "wall_time": time.time()})
        data = (json.dumps(entry, allow_nan=False) + "\n").encode()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if self._writer is not None:
            self._tensorboard(entry)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- internals ----------------------------------------------------------------------------
    def _truncate(self, stage: str, epoch: int, later: tuple[str, ...]) -> None:
        """Rewrite the file (atomically) without the lines a restart of ``stage`` replaces;
        a torn last line (a crash mid-write) goes too."""
        if not self.path.exists():
            return
        kept, dropped = [], False
        for line in self.path.read_text().splitlines(keepends=True):
            try:
                entry = json.loads(line) if line.endswith("\n") else None
            except json.JSONDecodeError:
                entry = None
            if entry is None or entry.get("stage") in later or (
                entry.get("stage") == stage and entry.get("epoch", 0) > epoch
            ):
                dropped = True
                continue
            kept.append(line)
        if dropped:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(kept))
            os.replace(tmp, self.path)

    def _tensorboard(self, entry: dict[str, Any]) -> None:
        step = int(entry["epoch"])
        for tag, value in _scalars(entry):
            self._writer.add_scalar(tag, value, step, walltime=entry["wall_time"])
        if self.model is not None:
            import numpy as np

            for name, bits in channel_bits(self.model).items():
                self._writer.add_histogram(f"weight_bits/{name}", np.asarray(bits), step,
                                           walltime=entry["wall_time"])
            for name, slot in self.model.activation_slots():
                self._writer.add_scalar(f"act_bits/{name}",
                                        slot.bits[int(slot.choice.assignment())], step,
                                        walltime=entry["wall_time"])
        self._writer.flush()


def channel_bits(model) -> dict[str, list[int]]:
    """Each searchable layer's weight bit-width per output channel (0 = pruned)."""
    out = {}
    for name, layer in model.layers():
        choice = layer.choice
        index = choice.assignment().expand(layer.weight.shape[0])
        out[name] = [int(choice.bits[int(i)]) for i in index]
    return out


def _scalars(entry: dict[str, Any], prefix: str = ""):
    """``(tag, number)`` for every number in ``entry``, nested dicts as ``outer/inner``."""
    for key, value in entry.items():
        if key in ("stage", "epoch", "wall_time") and not prefix:
            continue
        if isinstance(value, dict):
            yield from _scalars(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None:
            yield f"{prefix}{key}", float(value)


def _finite(value: Any) -> Any:
    """NaN and ±inf as null (JSON has no spelling for them)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a ``metrics.jsonl`` (a torn last line of a live run is skipped)."""
    out = []
    for line in Path(path).read_text().splitlines(keepends=True):
        if line.endswith("\n") and line.strip():
            out.append(json.loads(line))
    return out
