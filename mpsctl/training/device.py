"""Where a run computes (``device: auto|cpu|cuda[:N]``) and how it seeds its generators."""

from __future__ import annotations

import random

import torch

from mpsctl.errors import UserError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` → the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device: '{name}' asked for but CUDA is not available (use auto or cpu)")
    return device
