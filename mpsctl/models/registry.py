"""Model registry: a recipe's ``model.name`` is a registered name, ``torchvision:NAME`` or
``package.module:attr``; every failure becomes one ``ModelError`` line naming the key to fix.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable
from typing import Any

from torch import nn

from mpsctl.errors import ModelError
from mpsctl.registry import Registry, did_you_mean

ModelFactory = Callable[..., nn.Module]

MODELS: Registry[ModelFactory] = Registry("model")
#: TypeError texts that name the offending keyword argument.
_KWARG_IN_ERROR = re.compile(
    r"(?:unexpected keyword argument|required (?:positional |keyword-only )?argument:?) '(\w+)'"
)


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator that makes ``factory(**kwargs) -> nn.Module`` available as ``name``."""
    return MODELS.register(name)


def available_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the shell-style ``pattern`` (``"res*"``), sorted.

    ``torchvision:NAME`` and ``module:attr`` models are not listed.
    """
    return MODELS.names(pattern)


def build_model(
    name: str,
    kwargs: dict[str, Any],
    weights: str | None = None,
    *,
    weights_key: str = "model.weights",
) -> nn.Module:
    """Build model ``name`` with ``kwargs``, then load the state_dict file ``weights`` if given.

    ``weights_key`` is the recipe key that holds ``weights``, named in error messages.
    """
    from mpsctl.models.external import import_attr, torchvision_factory
    from mpsctl.models.weights import load_weights

    if not isinstance(name, str) or not name:
        raise ModelError(f"model.name: must be a model name, got {name!r}")
    if name.startswith("torchvision:"):
        factory = torchvision_factory(name.removeprefix("torchvision:"))
    elif ":" in name:
        factory = import_attr(name)
    else:
        factory = _lookup(name)
    model = call_factory(name, factory, kwargs)
    if weights is not None:
        load_weights(model, weights, name, weights_key)
    return model


def call_factory(name: str, factory: Any, kwargs: dict[str, Any]) -> nn.Module:
    """Call ``factory(**kwargs)``, naming a rejected kwarg as ``model.<kwarg>``."""
    if isinstance(factory, nn.Module):
        if kwargs:
            raise ModelError(
                f"model.{next(iter(kwargs))}: {name} is a ready-made module and takes no "
                "arguments; remove them"
            )
        return copy.deepcopy(factory)  # two builds must not share parameters
    _check_kwargs(name, factory, kwargs)
    try:
        model = factory(**kwargs)
    except (TypeError, ValueError) as exc:
        message = _first_line(exc)
        raise ModelError(
            f"{_blamed_key(message, kwargs)}: building {name} failed: {message}"
        ) from exc
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"model.name: {name} returned {type(model).__name__}, not a torch.nn.Module; "
            "point it at a class or a function that returns one"
        )
    return model


def _blamed_key(message: str, kwargs: dict[str, Any]) -> str:
    """``model.<kwarg>`` for the kwarg an error message names, else ``model``."""
    match = _KWARG_IN_ERROR.search(message)
    if match:
        return f"model.{match.group(1)}"
    for key in kwargs:
        if re.search(rf"\b{re.escape(key)}\b", message):
            return f"model.{key}"
    return "model"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_kwargs(name: str, factory: Any, kwargs: dict[str, Any]) -> None:
    """Refuse kwargs the factory's signature cannot take, before calling it."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [
        key
        for key, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    for key in kwargs:
        if key not in accepted:
            takes = ", ".join(accepted) or "no arguments"
            raise ModelError(
                f"model.{key}: {name} has no argument {key!r}{did_you_mean(key, accepted)}; "
                f"remove it ({name} takes {takes})"
            )


def _lookup(name: str) -> ModelFactory:
    if name not in MODELS:
        raise ModelError(
            f"model.name: unknown model {name!r}{MODELS.did_you_mean(name)}; available: "
            f"{', '.join(available_models())}, or torchvision:NAME, or package.module:attr"
        )
    return MODELS.get(name)
