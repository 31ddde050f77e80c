"""Checkpoints: atomic saves, safe loads that never run code, stage checks, latest lookup."""

from __future__ import annotations

import errno
import os
import pickle
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

import mpsctl.checkpoint.format as checkpoint
from mpsctl.checkpoint.format import (
    FORMAT_VERSION,
    STAGE_NEEDS,
    STAGES,
    find_latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from mpsctl.errors import CheckpointError


class CreatesMarker:
    """A pickle that, if ever unpickled unsafely, creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def payload(stage: str = "search", **extra: Any) -> dict[str, Any]:
    return {
        "stage": stage,
        "recipe": {"name": "run", "search": {"weight_bits": [2, 4, 8]}},
        "model_state": {"conv.weight": torch.randn(4, 3, 3, 3)},
        "metrics": [{"epoch": 0, "accuracy": 0.5}],
        **extra,
    }


def one_line_error(path: Path, **kwargs: Any) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# --- saving ------------------------------------------------------------------------------


def test_round_trip_adds_format_and_versions(tmp_path: Path) -> None:
    original = payload(rng={"torch": torch.get_rng_state()})
    path = save_checkpoint(tmp_path / "runs" / "demo" / "search.pt", original)
    assert path.is_file()
    loaded = load_checkpoint(path)
    assert loaded["format_version"] == FORMAT_VERSION and loaded["stage"] == "search"
    assert set(loaded["versions"]) == {"mpsctl", "torch", "torchvision", "python"}
    assert loaded["versions"]["torch"] == torch.__version__
    assert torch.equal(loaded["model_state"]["conv.weight"], original["model_state"]["conv.weight"])
    assert loaded["recipe"] == original["recipe"] and loaded["metrics"] == original["metrics"]
    assert "format_version" not in original  # the caller's dict is left alone
    assert leftovers(path.parent) == []


def test_save_overwrites_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "export.pt"
    save_checkpoint(path, payload("export", step=1))
    save_checkpoint(path, payload("export", step=2))
    assert load_checkpoint(path)["step"] == 2


def test_payload_must_name_a_stage(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="stage"):
        save_checkpoint(tmp_path / "x.pt", {"model_state": {}})


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        (Path("runs"), "payload['extra'] is a PosixPath"),
        (torch.__version__, "payload['extra'] is a TorchVersion"),
        ({"a": [1, object()]}, "payload['extra']['a'][1] is a object"),
    ],
)
def test_payload_that_could_not_be_loaded_safely_is_refused(
    tmp_path: Path, bad: Any, where: str
) -> None:
    if os.name != "posix" and isinstance(bad, Path):
        pytest.skip("path class name differs")
    with pytest.raises(TypeError, match=re.escape(where)):
        save_checkpoint(tmp_path / "search.pt", payload(extra=bad))
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path / "search.pt", payload(step=1))

    def disk_full(obj: Any, stream: Any) -> None:
        stream.write(b"partial bytes")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(path, payload(step=2))
    message = str(info.value)
    assert str(path) in message and os.strerror(errno.ENOSPC) in message and "\n" not in message
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["search.pt"]


def test_failure_that_is_not_an_os_error_still_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(obj: Any, stream: Any) -> None:
        raise TypeError("cannot pickle")

    monkeypatch.setattr(checkpoint.torch, "save", broken)
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "search.pt", payload())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_unwritable_folder(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*locked"):
            save_checkpoint(folder / "search.pt", payload())
    finally:
        folder.chmod(0o700)


def test_folder_that_refuses_new_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*: Permission denied$"):
        save_checkpoint(tmp_path / "search.pt", payload())


def test_parent_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*blocker"):
        save_checkpoint(blocker / "run" / "search.pt", payload())


# --- loading bad files -------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    message = one_line_error(tmp_path / "gone.pt")
    assert message == f"checkpoint not found: {tmp_path / 'gone.pt'}"


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "search.pt"
    path.touch()
    assert "is empty" in one_line_error(path)


def test_truncated_file(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "search.pt", payload())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "is not a readable checkpoint (truncated or corrupt" in one_line_error(path)


# fixed bytes and explicit ids: every pytest-xdist worker must collect the same test ids
@pytest.mark.parametrize("content", [random.Random(0).randbytes(2048), b"hello world",
                                     b"\x80\x02K\x01."], ids=["random", "text", "pickle"])
def test_random_or_foreign_bytes(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "search.pt"
    path.write_bytes(content)
    message = one_line_error(path)
    assert str(path) in message


def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(CreatesMarker(proof), protocol=2))
    assert proof.exists()  # the payload really would run code if unpickled unsafely

    marker = tmp_path / "marker"
    hostile = {"format_version": 1, "stage": "search", "x": CreatesMarker(marker)}
    in_torch_file = tmp_path / "hostile.pt"
    torch.save(hostile, in_torch_file)
    raw_pickle = tmp_path / "raw.pt"
    raw_pickle.write_bytes(pickle.dumps(CreatesMarker(marker), protocol=2))
    for path in (in_torch_file, raw_pickle):
        message = one_line_error(path)
        assert "refused to load it" in message and "never runs code" in message
    assert not marker.exists()


def test_plain_state_dict_is_not_an_mpsctl_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    assert "is not an mpsctl checkpoint" in one_line_error(path)
    torch.save([torch.ones(1)], path)
    assert "is not an mpsctl checkpoint" in one_line_error(path)


def test_newer_format_asks_to_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "search.pt"
    torch.save({"format_version": FORMAT_VERSION + 1, "stage": "search"}, path)
    message = one_line_error(path)
    assert "written by a newer mpsctl" in message and message.endswith("upgrade mpsctl")


def test_unknown_stage(tmp_path: Path) -> None:
    path = tmp_path / "search.pt"
    torch.save({"format_version": FORMAT_VERSION, "stage": "train"}, path)
    assert "unknown stage 'train'" in one_line_error(path)


# --- stage checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "stage", "first"),
    [
        ("export", "finetune", "search"),
        ("export", "export", "search"),
        ("finetune", "search", "export"),
        ("refine", "export", "search"),
        ("refine", "finetune", "search"),
    ],
)
def test_wrong_stage_names_the_command_to_run_first(
    tmp_path: Path, command: str, stage: str, first: str
) -> None:
    path = save_checkpoint(tmp_path / f"{stage}.pt", payload(stage))
    message = one_line_error(path, expect=STAGE_NEEDS[command], command=command)
    article = "an" if stage == "export" else "a"
    assert f"is {article} {stage} checkpoint" in message and f"`mpsctl {command}`" in message
    assert " a export" not in message
    assert message.endswith(f"run `mpsctl {first}` first")


@pytest.mark.parametrize(
    ("command", "stage"),
    [("export", "search"), ("export", "refine"), ("finetune", "export"), ("refine", "search"),
     ("refine", "refine"), ("export --onnx", "export"), ("export --onnx", "finetune")],
)
def test_accepted_stages_load(tmp_path: Path, command: str, stage: str) -> None:
    path = save_checkpoint(tmp_path / f"{stage}.pt", payload(stage))
    assert load_checkpoint(path, expect=STAGE_NEEDS[command], command=command)["stage"] == stage
    assert load_checkpoint(path, command=command)["stage"] == stage


@pytest.mark.parametrize("command", sorted(STAGE_NEEDS))
def test_the_command_alone_selects_its_row_of_the_stage_table(tmp_path: Path, command: str) -> None:
    for stage in STAGES:
        path = save_checkpoint(tmp_path / f"{stage}.pt", payload(stage))
        if stage in STAGE_NEEDS[command]:
            assert load_checkpoint(path, command=command)["stage"] == stage
        else:
            assert f"`mpsctl {command}`" in one_line_error(path, command=command)


def test_every_stage_round_trips(tmp_path: Path) -> None:
    for stage in STAGES:
        path = save_checkpoint(tmp_path / f"{stage}.pt", payload(stage))
        assert load_checkpoint(path)["stage"] == stage


# --- latest checkpoint -------------------------------------------------------------------


def saved_at(path: Path, stage: str, mtime: int) -> Path:
    save_checkpoint(path, payload(stage))
    os.utime(path, (mtime, mtime))
    return path


def test_latest_in_a_run_folder_by_mtime(tmp_path: Path) -> None:
    saved_at(tmp_path / "search.pt", "search", 1_000)
    newest = saved_at(tmp_path / "export.pt", "export", 3_000)
    saved_at(tmp_path / "finetune.pt", "finetune", 2_000)
    last = tmp_path / "last.pt"
    last.write_bytes(b"x")
    temp = tmp_path / ".search.pt.abc.tmp"
    temp.write_bytes(b"x")
    os.utime(last, (9_000, 9_000))
    os.utime(temp, (9_000, 9_000))
    assert find_latest_checkpoint(tmp_path) == newest


def test_latest_prefers_the_later_stage_on_equal_mtime(tmp_path: Path) -> None:
    saved_at(tmp_path / "search.pt", "search", 5_000)
    refine = saved_at(tmp_path / "refine.pt", "refine", 5_000)
    assert find_latest_checkpoint(tmp_path) == refine


def test_latest_searches_runs_below_a_project_folder(tmp_path: Path) -> None:
    saved_at(tmp_path / "runs" / "a" / "search.pt", "search", 1_000)
    newest = saved_at(tmp_path / "runs" / "b" / "export.pt", "export", 2_000)
    (tmp_path / "runs" / "notes.txt").write_text("not a run")
    assert find_latest_checkpoint(tmp_path) == newest


def test_no_checkpoint_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "runs" / "empty").mkdir(parents=True)
    (tmp_path / "last.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError) as info:
        find_latest_checkpoint(tmp_path)
    message = str(info.value)
    assert "no checkpoint found" in message and "run `mpsctl search` first" in message
