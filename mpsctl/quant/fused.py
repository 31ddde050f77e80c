"""Fused bodies of the mixed-precision quantizers, compiled with torch.compile by default.

The mixture ``Σ_i θ_i Q_{p_i}(x)`` is a handful of pointwise ops per candidate; run one by
one in eager mode they read and write the activation tensor some 20 times, which made the
search step several times slower than plain training. Written as one pure function per
(precisions, signedness), inductor fuses forward into one pass and backward (the input,
clip and θ gradients) into one pass with reductions. The eager bodies are the fallback
(no compiler, or switched off by ``MPSCTL_FUSED=0`` or the recipe's ``search.compile:
false``) and compute the same numbers.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

_FLOOR_EPS = 1e-4
_state = {"enabled": os.environ.get("MPSCTL_FUSED", "1") != "0", "broken": False}


def set_fused(enabled: bool) -> None:
    """Switch the compiled path on or off for this process (the eager path always works)."""
    _state["enabled"] = bool(enabled) and os.environ.get("MPSCTL_FUSED", "1") != "0"


def fused_enabled() -> bool:
    return _state["enabled"] and not _state["broken"]


def _levels(bits: int, signed: bool) -> int:
    return max((1 << (bits - 1)) - 1, 1) if signed else (1 << bits) - 1


def _quantize(xc: Tensor, clip: Tensor, bits: int, signed: bool) -> Tensor:
    """Quantize an already clipped tensor (``xc`` within the clip range)."""
    levels = _levels(bits, signed)
    s = levels / clip
    if signed:
        return torch.round(xc * s) / s
    # Same margin as activation.pact_forward (grows above 8 bits with the float round-off).
    return torch.floor(xc * s + _FLOOR_EPS * max(1.0, levels / 255)) / s


def _clipped(x: Tensor, clip: Tensor, signed: bool) -> Tensor:
    low = -clip if signed else torch.zeros_like(clip)
    return torch.minimum(torch.maximum(x, low), clip)


def _pact_bodies(bits: tuple[int, ...], signed: bool):
    def forward(x: Tensor, clip: Tensor, theta: Tensor) -> Tensor:
        xc = _clipped(x, clip, signed)
        out = theta[0] * _quantize(xc, clip, bits[0], signed)
        for i in range(1, len(bits)):
            out = out + theta[i] * _quantize(xc, clip, bits[i], signed)
        return out

    def backward(grad: Tensor, x: Tensor, clip: Tensor, theta: Tensor):
        mass = theta.sum()
        above = x >= clip
        below = x <= -clip if signed else x <= 0
        zero = torch.zeros_like(grad)
        grad_x = torch.where(above | below, zero, grad) * mass
        grad_clip = torch.where(above, grad, zero).sum()
        if signed:
            grad_clip = grad_clip - torch.where(below, grad, zero).sum()
        xc = _clipped(x, clip, signed)
        grad_theta = torch.stack(
            [(grad * _quantize(xc, clip, p, signed)).sum() for p in bits]
        )
        return grad_x, grad_clip * mass, grad_theta

    return forward, backward


def _pact_eager_bodies(bits: tuple[int, ...], signed: bool):
    """The same computation for the eager path, written to touch each tensor fewer times:
    one scratch buffer per call, updated in place, and dot products instead of temporaries
    (the inputs are flat, see ``mixed_pact_quantize``)."""

    def quantize_into(buf: Tensor, xc: Tensor, clip: Tensor, p: int) -> Tensor:
        levels = _levels(p, signed)
        s = levels / clip
        torch.mul(xc, s, out=buf)
        if signed:
            buf.round_()
        else:
            buf.add_(_FLOOR_EPS * max(1.0, levels / 255)).floor_()
        return buf.div_(s)

    def clipped(x: Tensor, clip: Tensor) -> Tensor:
        return torch.clamp(x, min=-clip if signed else torch.zeros_like(clip), max=clip)

    def forward(x: Tensor, clip: Tensor, theta: Tensor) -> Tensor:
        xc = clipped(x, clip)
        buf = torch.empty_like(x)
        out = torch.mul(quantize_into(buf, xc, clip, bits[0]), theta[0])
        for i in range(1, len(bits)):
            out.addcmul_(quantize_into(buf, xc, clip, bits[i]), theta[i])
        return out

    def backward(grad: Tensor, x: Tensor, clip: Tensor, theta: Tensor):
        mass = theta.sum()
        above = x >= clip
        below = x <= -clip if signed else x <= 0
        zero = grad.new_zeros(())
        grad_x = torch.where(above.logical_or(below), zero, grad).mul_(mass)
        grad_clip = torch.where(above, grad, zero).sum()
        if signed:
            grad_clip = grad_clip - torch.where(below, grad, zero).sum()
        xc = clipped(x, clip)
        buf = torch.empty_like(x)
        flat_grad = grad.reshape(-1)
        grad_theta = torch.stack(
            [torch.dot(flat_grad, quantize_into(buf, xc, clip, p).reshape(-1)) for p in bits]
        )
        return grad_x, grad_clip * mass, grad_theta

    return forward, backward


def _minmax_bodies(bits: tuple[int, ...], per_channel: bool):
    def quantize(weight: Tensor, absmax: Tensor, p: int) -> Tensor:
        view = (-1,) + (1,) * (weight.dim() - 1)
        scale = (2 * absmax / ((1 << p) - 1)).reshape(view)
        half = float(1 << (p - 1))
        return torch.clamp(torch.round(weight / scale), -half, half - 1) * scale

    def weights_of(theta: Tensor, j: int, weight: Tensor) -> Tensor:
        if per_channel:
            return theta[j].reshape((-1,) + (1,) * (weight.dim() - 1))
        return theta[j]

    def forward(weight: Tensor, theta: Tensor, absmax: Tensor) -> Tensor:
        out = torch.zeros_like(weight)
        for j, p in enumerate(bits):
            if p:
                out = out + weights_of(theta, j, weight) * quantize(weight, absmax, p)
        return out

    def backward(grad: Tensor, weight: Tensor, theta: Tensor, absmax: Tensor):
        live = [j for j, p in enumerate(bits) if p]
        mass = sum(weights_of(theta, j, weight) for j in live)
        rows = []
        for p in bits:
            if p == 0:
                rows.append(grad.flatten(1).sum(1) * 0 if per_channel else grad.sum() * 0)
                continue
            prod = grad * quantize(weight, absmax, p)
            rows.append(prod.flatten(1).sum(1) if per_channel else prod.sum())
        return grad * mass, torch.stack(rows)

    return forward, backward


#: Every (precisions, signedness) pair is a closure over the same code, and dynamo counts
#: their compilations against one limit per code object; shapes are dynamic, so one
#: compilation per pair (and tensor rank) serves every layer.
_RECOMPILE_LIMIT = 64


@functools.cache
def _compiled(kind: str, key: tuple) -> tuple[Callable, Callable]:
    import logging

    import torch._dynamo

    # On a CPU-only machine torch's extension loader warns that it found no CUDA runtime.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), _RECOMPILE_LIMIT))
    # Sizes that happen to be equal (3 candidates, 3 input channels, a 3×3 kernel) must not
    # be assumed equal, or every new layer shape compiles again.
    try:
        import torch.fx.experimental._config as fx_config

        fx_config.use_duck_shape = False
    except (ImportError, AttributeError):
        pass
    bodies = _pact_bodies(*key) if kind == "pact" else _minmax_bodies(*key)
    return tuple(torch.compile(fn, dynamic=True, fullgraph=True) for fn in bodies)


@functools.cache
def _eager(kind: str, key: tuple) -> tuple[Callable, Callable]:
    return _pact_eager_bodies(*key) if kind == "pact" else _minmax_bodies(*key)


def bodies(kind: str, key: tuple) -> tuple[Callable, Callable]:
    """(forward, backward) for ``kind`` in {"pact", "minmax"}: compiled when enabled."""
    if fused_enabled():
        return _compiled(kind, key)
    return _eager(kind, key)


def call(kind: str, key: tuple, which: int, *args):
    """Run a body; if compilation fails (no C++ compiler, unsupported platform), warn once
    and continue on the eager path for the rest of the process.

    The bodies are called from autograd functions, so they get detached tensors: otherwise
    dynamo would compile again for every requires_grad pattern and every parameter shape.
    """
    args = tuple(a.detach() for a in args)
    if fused_enabled():
        try:
            return _compiled(kind, key)[which](*args)
        except Exception as exc:  # inductor raises many kinds; the eager path is exact
            _state["broken"] = True
            warnings.warn(
                f"mpsctl: compiling the fused quantizers failed ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); using the eager path",
                RuntimeWarning, stacklevel=2,
            )
    return _eager(kind, key)[which](*args)
