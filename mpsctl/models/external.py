"""Models that live outside mpsctl: torchvision's by name, or the user's own ``module:attr``."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from torch import nn

from mpsctl.errors import ModelError, UserError
from mpsctl.registry import did_you_mean


def torchvision_factory(name: str) -> Callable[..., nn.Module]:
    """``torchvision.models.get_model`` for ``name``; kwargs (``weights`` too) pass through.

    A torchvision ``weights`` kwarg such as ``DEFAULT`` downloads on first use.
    """
    import torchvision.models

    names = torchvision.models.list_models()
    if name not in names:
        raise ModelError(
            f"model.name: torchvision has no model {name!r}{did_you_mean(name, names)}; "
            "see torchvision.models.list_models()"
        )

    def build(**kwargs: Any) -> nn.Module:
        try:
            return torchvision.models.get_model(name, **kwargs)
        except OSError as exc:  # URLError, timeouts, DNS: the weights could not be fetched
            if kwargs.get("weights") is None:
                raise
            raise ModelError(_download_failed(name, str(kwargs["weights"]), exc)) from None

    return build


def _download_failed(name: str, weights: str, exc: OSError) -> str:
    reason = getattr(exc, "reason", None) or exc.strerror or str(exc) or type(exc).__name__
    reason = str(reason).strip().splitlines()[0] if str(reason).strip() else type(exc).__name__
    return (
        f"model.weights: cannot download torchvision's {weights} weights of {name} ({reason}); "
        f"on a machine with network run `python -c \"import torch, torchvision; "
        f"torch.save(torchvision.models.get_model('{name}', weights='{weights}').state_dict(), "
        f"'{name}.pt')\"` and set model.weights to the path of that file"
    )


def import_attr(
    spec: str, key: str = "model.name", error: type[UserError] = ModelError
) -> Any:
    """Import ``package.module:attr`` (the working directory first on the path).

    The current directory is put on ``sys.path`` so a user's ``my_net.py`` next to the
    recipe is importable without installing it. Failures raise ``error`` naming ``key``.
    """
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise error(f"{key}: {spec!r} must look like package.module:attr")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()  # see files written since the last import
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a user's module can fail in any way while importing
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise error(
            f"{key}: cannot import module {module_name!r} ({type(exc).__name__}: {reason}); "
            f"run from the folder that holds it or install it (working directory: {cwd})"
        ) from exc
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            public = [n for n in dir(target) if not n.startswith("_")]
            raise error(
                f"{key}: {module_name!r} has no attribute {attr!r}{did_you_mean(part, public)}"
            )
        target = getattr(target, part)
    if not callable(target):
        what = "an nn.Module class, a function returning one, or a module instance"
        if key != "model.name":
            what = "a function or class"
        raise error(f"{key}: {spec} is a {type(target).__name__}; it must be {what}")
    return target
