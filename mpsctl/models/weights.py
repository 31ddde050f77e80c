"""Loading a user's weights file into a freshly built model, without executing pickled code."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mpsctl.errors import ModelError

#: How many differing keys of each kind an error message lists.
_SHOWN = 3


def load_weights(model: nn.Module, path: str, name: str, key: str = "model.weights") -> None:
    """Load ``path`` (a state_dict, or a dict with a ``state_dict``/``model`` entry) strictly.

    Refuses files whose keys or shapes differ from ``model`` rather than loading part of them.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelError(f"{key}: weights file {file} not found; fix the path or remove {key}")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights-only errors share no base class
        text = str(exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        raise ModelError(
            f"{key}: cannot load {file} with torch.load(weights_only=True): {reason}"
        ) from exc
    state = _find_state_dict(obj)
    if state is None:
        raise ModelError(
            f"{key}: {file} holds no state_dict; save one with torch.save(model.state_dict(), path)"
        )
    expected = model.state_dict()
    state = _strip_prefix(state, "module.", expected)
    problem = _mismatch(state, expected)
    if problem:
        raise ModelError(
            f"{key}: {file} does not fit {name}: {problem}; "
            "check that the model kwargs match the weights"
        )
    model.load_state_dict(state)


def _find_state_dict(obj: Any) -> dict[str, Tensor] | None:
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for entry in ("state_dict", "model"):
            if _is_state_dict(obj.get(entry)):
                return dict(obj[entry])
    return None


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


def _strip_prefix(
    state: dict[str, Tensor], prefix: str, expected: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Drop the ``module.`` prefix that DistributedDataParallel adds to every key."""
    if all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in expected):
        return {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def _mismatch(state: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> str:
    """One-line summary of missing, unexpected and mis-shaped keys ('' when they match)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} file {tuple(state[k].shape)} model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    parts = [
        _listing(label, items)
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
        if items
    ]
    return "; ".join(parts)


def _listing(label: str, items: list[str]) -> str:
    more = f", +{len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return f"{len(items)} {label} ({', '.join(items[:_SHOWN])}{more})"
