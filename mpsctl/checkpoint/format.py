"""The one checkpoint format every stage writes: atomic saves, safe loads, stage checks.

A checkpoint is a ``torch.save`` of plain tensors and containers, so it is always loaded with
``weights_only=True``: reading a checkpoint never executes code.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.metadata
import os
import platform
import re
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mpsctl.errors import CheckpointError
from mpsctl.version import __version__

FORMAT_VERSION = 1
STAGES = ("search", "refine", "export", "finetune")

#: The stages each command accepts as input: ``load_checkpoint(path, command=...)`` checks
#: against this table, so it is the one place that says which command follows which.
STAGE_NEEDS: dict[str, tuple[str, ...]] = {
    "export": ("search", "refine"),
    "export --onnx": ("export", "finetune"),
    "finetune": ("export", "refine"),
    "refine": ("search", "refine"),
}
#: The command to suggest when a command is handed a checkpoint of the wrong stage.
RUN_FIRST = {"export": "search", "export --onnx": "export", "finetune": "export",
             "refine": "search"}

_TEMP_SUFFIX = ".tmp"
_UNSAFE_GLOBAL = re.compile(r"unsupported global:?\s+(?:GLOBAL\s+)?([\w.]+)", re.IGNORECASE)


def library_versions() -> dict[str, str | None]:
    """Versions recorded in every checkpoint, to explain a later incompatibility."""
    try:
        torchvision = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        torchvision = None
    return {
        "mpsctl": __version__,
        "torch": str(torch.__version__),  # a str subclass that weights_only refuses
        "torchvision": torchvision,
        "python": platform.python_version(),
    }


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (which names its ``stage``) atomically; the old file survives failures."""
    path = Path(path)
    stage = payload.get("stage")
    if stage not in STAGES:
        raise ValueError(f"checkpoint payload needs a stage in {STAGES}, got {stage!r}")
    record = {**payload, "format_version": FORMAT_VERSION, "versions": library_versions()}
    unsafe = _unloadable_part(record, "payload")
    if unsafe is not None:
        raise TypeError(f"checkpoint payload must hold plain tensors and containers: {unsafe}")
    temp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=_TEMP_SUFFIX
        )
        temp = Path(name)
        with os.fdopen(handle, "wb") as stream:
            torch.save(record, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
        temp = None
        _fsync_dir(path.parent)
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {_os_reason(exc)}") from None
    finally:
        if temp is not None:
            temp.unlink(missing_ok=True)
    return path


_SCALARS = (str, bytes, int, float, complex, bool, type(None))
_TORCH_LEAVES = (torch.Tensor, torch.Size, torch.dtype, torch.device)


def _unloadable_part(value: Any, where: str) -> str | None:
    """Where ``value`` holds something ``torch.load(weights_only=True)`` would refuse."""
    if isinstance(value, _TORCH_LEAVES) or type(value) in _SCALARS:
        return None
    if type(value) in (dict, collections.OrderedDict):
        for key, item in value.items():
            found = _unloadable_part(key, f"{where} key {key!r}") or _unloadable_part(
                item, f"{where}[{key!r}]"
            )
            if found is not None:
                return found
        return None
    if type(value) in (list, tuple, set):
        for index, item in enumerate(value):
            found = _unloadable_part(item, f"{where}[{index}]")
            if found is not None:
                return found
        return None
    return f"{where} is a {type(value).__qualname__}"


def load_checkpoint(
    path: str | Path, expect: Sequence[str] | None = None, command: str = ""
) -> dict[str, Any]:
    """Load and check a checkpoint; ``expect`` lists the stages ``command`` can start from
    (default: the command's entry in :data:`STAGE_NEEDS`; any stage without a command)."""
    path = Path(path)
    if expect is None and command:
        expect = STAGE_NEEDS[command]
    record = _read(path)
    if not isinstance(record, dict) or "format_version" not in record or "stage" not in record:
        raise CheckpointError(
            f"{path} is not an mpsctl checkpoint (no format_version/stage; a plain "
            "state_dict? pass a file written by an mpsctl command)"
        )
    version = record["format_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path} has a malformed format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer mpsctl (format {version}, this one reads up to "
            f"{FORMAT_VERSION}); upgrade mpsctl"
        )
    stage = record["stage"]
    if stage not in STAGES:
        raise CheckpointError(
            f"{path} has an unknown stage {stage!r} (expected one of {', '.join(STAGES)})"
        )
    if expect is not None and stage not in expect:
        raise CheckpointError(_wrong_stage(path, stage, expect, command))
    return record


def find_latest_checkpoint(run_dir_or_cwd: str | Path) -> Path:
    """The newest stage checkpoint of a run folder, or of any ``runs/*/`` below a project."""
    folder = Path(run_dir_or_cwd)
    folders = [folder]
    if (folder / "runs").is_dir():
        folders += sorted(p for p in (folder / "runs").iterdir() if p.is_dir())
    found = [
        candidate
        for run in folders
        for stage in STAGES
        if (candidate := run / f"{stage}.pt").is_file()
    ]
    if not found:
        raise CheckpointError(
            f"no checkpoint found in {folder} (pass a checkpoint path, or run `mpsctl search` "
            "first)"
        )
    return max(found, key=lambda p: (p.stat().st_mtime_ns, STAGES.index(p.stem)))


def _read(path: Path) -> Any:
    """``torch.load`` in safe mode, every failure turned into a one-line CheckpointError."""
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder (pass a .pt checkpoint file)")
    try:
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path} is empty (its write was interrupted; rerun the stage)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {_os_reason(exc)}") from None
    except Exception as exc:  # torch raises many types for corrupt or hostile files
        hostile = _UNSAFE_GLOBAL.search(str(exc))
        if hostile is not None:
            raise CheckpointError(
                f"{path} refers to {hostile.group(1)}, which is not a plain tensor or container; "
                "refused to load it (loading a checkpoint never runs code)"
            ) from None
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt: {_load_reason(exc)})"
        ) from None


def _load_reason(exc: Exception) -> str:
    """The informative line of torch's (often many-line) load error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    operand = next((line for line in lines if line.startswith("Unsupported operand")), None)
    line = operand or (lines[0] if lines else "")
    return f"{type(exc).__name__}: {line}"[:120]


def _wrong_stage(path: Path, stage: str, expect: Sequence[str], command: str) -> str:
    first = RUN_FIRST.get(command, expect[0] if expect else "search")
    needs = " or ".join(expect)
    user = f"`mpsctl {command}`" if command else "this command"
    return (
        f"{path} is {_article(stage)} {stage} checkpoint but {user} needs {_article(needs)} "
        f"{needs} checkpoint; run `mpsctl {first}` first"
    )


def _article(word: str) -> str:
    """'an' before a vowel sound (an export checkpoint), else 'a'."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable; some platforms and file systems cannot open folders."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc).splitlines()[0]
