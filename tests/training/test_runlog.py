"""metrics.jsonl and TensorBoard event files of the run log (issue 18)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mpsctl.errors import MissingPackageError
from mpsctl.training.runlog import (
    TENSORBOARD_MISSING,
    RunLog,
    read_metrics,
)


def _epochs(log: RunLog, stage: str, first: int, last: int, scale: float = 1.0) -> None:
    log.start(stage, first - 1)
    for epoch in range(first, last + 1):
        log.epoch(stage, {"epoch": epoch, "train_loss": scale / epoch,
                          "cost": {"params_bit": 9.0}})
    log.close()


def _keys(path: Path) -> list[tuple[str, int]]:
    return [(e["stage"], e["epoch"]) for e in read_metrics(path)]


def test_one_line_per_epoch_with_stage_and_time(tmp_path: Path) -> None:
    log = RunLog(tmp_path)
    _epochs(log, "warmup", 1, 2)
    _epochs(log, "search", 1, 3)
    lines = log.path.read_text().splitlines()
    assert len(lines) == 5
    first = json.loads(lines[0])
    assert list(first)[:2] == ["stage", "epoch"] and first["wall_time"] > 0
    assert _keys(log.path) == [("warmup", 1), ("warmup", 2), ("search", 1), ("search", 2),
                               ("search", 3)]


def test_a_resume_drops_what_the_checkpoint_does_not_have(tmp_path: Path) -> None:
    log = RunLog(tmp_path)
    _epochs(log, "warmup", 1, 1)
    _epochs(log, "search", 1, 3)   # epoch 3 logged, then killed before last.pt was written
    _epochs(log, "finetune", 1, 1)  # an old fine-tuning of the same run folder
    with open(log.path, "a") as f:
        f.write('{"stage": "search", "epo')  # a torn line from a crash mid-write
    _epochs(log, "search", 3, 4)  # --resume from last.pt at epoch 2
    assert _keys(log.path) == [("warmup", 1), ("search", 1), ("search", 2), ("search", 3),
                               ("search", 4)]
    _epochs(log, "warmup", 1, 1)  # a fresh search starts the file again
    assert _keys(log.path) == [("warmup", 1)]


def test_nan_is_written_as_null(tmp_path: Path) -> None:
    log = RunLog(tmp_path)
    log.start("search", 0)
    log.epoch("search", {"epoch": 1, "val_loss": float("nan")})
    assert read_metrics(log.path)[0]["val_loss"] is None


def test_other_ranks_write_nothing(tmp_path: Path) -> None:
    log = RunLog(tmp_path / "run", tensorboard=True, enabled=False)
    _epochs(log, "search", 1, 2)
    assert not (tmp_path / "run").exists()


def test_missing_tensorboard_is_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(MissingPackageError) as err:
        RunLog(tmp_path, tensorboard=True)
    assert str(err.value) == TENSORBOARD_MISSING and "\n" not in TENSORBOARD_MISSING
    assert list(tmp_path.iterdir()) == []


def test_tensorboard_scalars_and_purged_restart(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = RunLog(tmp_path, tensorboard=True)
    _epochs(log, "search", 1, 3)
    _epochs(log, "search", 3, 4, scale=2.0)  # resumed after epoch 2: the old epoch 3 is purged
    events = EventAccumulator(str(tmp_path / "tb" / "search"))
    events.Reload()
    assert {"train_loss", "cost/params_bit"} <= set(events.Tags()["scalars"])
    steps = [(e.step, round(e.value, 6)) for e in events.Scalars("train_loss")]
    assert steps == [(1, 1.0), (2, 0.5), (3, round(2 / 3, 6)), (4, 0.5)]
