"""Fused bodies of the mixed-precision quantizers, compiled with torch.compile by default.

The mixture ``Σ_i θ_i Q_{p_i}(x)`` is a handful of pointwise ops per candidate; run one by
one in eager mode they read and write the activation tensor some 20 times, which made the
search step several times slower than plain training. Written as one pure function per
(precisions, signedness), inductor fuses forward into one pass and backward (the input,
clip and θ gradients) into one pass with reductions. The eager bodies are the fallback
and compute the same numbers. Each quantizer is told at construction which path it takes
(``compiled``: the recipe's ``search.compile``, unless ``MPSCTL_FUSED=0`` switches the
compiler off for the process); a failed compilation moves the whole process to eager.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Callable
from enum import IntEnum

import torch
from torch import Tensor

from mpsctl.quant.grid import act_levels, floor_margin

#: Set once a compilation failed (no C++ compiler, unsupported platform): from then on every
#: quantizer of the process runs the eager bodies. A fact about the machine, not a setting.
_state = {"broken": False}


class Direction(IntEnum):
    """Which body of a quantizer :func:`call` runs."""

    FORWARD = 0
    BACKWARD = 1


def compiler_allowed() -> bool:
    """False when ``MPSCTL_FUSED=0`` switches the compiled bodies off for the process."""
    return os.environ.get("MPSCTL_FUSED", "1") != "0"


def use_compiled(requested: bool) -> bool:
    """The path a quantizer built now takes: compiled when ``requested`` (the recipe's
    ``search.compile``) and the environment allows it."""
    return bool(requested) and compiler_allowed()


def runs_compiled(compiled: bool) -> bool:
    """Whether a quantizer built with ``compiled`` runs the compiled bodies right now."""
    return compiled and not _state["broken"]


def _codes(xc: Tensor, clip: Tensor, bits: int, signed: bool) -> Tensor:
    """Integer codes (as floats) of an already clipped tensor (``xc`` within the range)."""
    levels = act_levels(bits, signed)
    s = levels / clip
    if signed:
        return torch.round(xc * s)
    return torch.floor(xc * s + floor_margin(levels))


def _clipped(x: Tensor, clip: Tensor, signed: bool) -> Tensor:
    low = -clip if signed else torch.zeros_like(clip)
    return torch.minimum(torch.maximum(x, low), clip)


def _pact_bodies(bits: tuple[int, ...], signed: bool):
    """Pure forward/backward of the mixture, written for the compiler to fuse.

    Signed bodies take ``floor``, a 0-d tensor: ``-inf``, or ``0`` to fold in the ReLU that
    follows a signed quantizer (the output is clamped at 0 and backward masks the gradient
    where it is 0, exactly what a separate ``ReLU`` does, minus one pass each way). As a
    tensor rather than a flag it keeps one compiled graph per body, not two (each costs
    about a second of compilation).
    """

    def mixture(x: Tensor, clip: Tensor, theta: Tensor) -> Tensor:
        # Σ k_i · (θ_i · step_i): at a one-hot θ exactly the fixed path's k · step.
        xc = _clipped(x, clip, signed)
        out = _codes(xc, clip, bits[0], signed) * (theta[0] * (clip / act_levels(bits[0], signed)))
        for i in range(1, len(bits)):
            step = clip / act_levels(bits[i], signed)
            out = out + _codes(xc, clip, bits[i], signed) * (theta[i] * step)
        return out

    def forward(x: Tensor, clip: Tensor, theta: Tensor, floor: Tensor | None) -> Tensor:
        out = mixture(x, clip, theta)
        return torch.maximum(out, floor) if signed else out

    def backward(grad: Tensor, x: Tensor, clip: Tensor, theta: Tensor, floor: Tensor | None):
        # (Written as inductor fuses best: a product with the mask, scalar zeros.)
        if signed:
            # The ReLU's mask is recomputed rather than read from a saved output: cheaper
            # than another full-size read, and exact: θ ≥ 0 in every mode and all codes
            # share the sign of x, so no round-off can change the mixture's sign. Written as
            # "not at or below" so that a NaN passes its gradient, as everywhere here.
            grad = grad * ~(mixture(x, clip, theta) <= floor)
        mass = theta.sum()
        above = x >= clip
        below = x <= -clip if signed else x <= 0
        grad_x = torch.where(above | below, 0.0, grad) * mass
        grad_clip = torch.where(above, grad, 0.0).sum()
        if signed:
            grad_clip = grad_clip - torch.where(below, grad, 0.0).sum()
        xc = _clipped(x, clip, signed)
        grad_theta = torch.stack(
            [(grad * _codes(xc, clip, p, signed)).sum() * (clip / act_levels(p, signed))
             for p in bits]
        )
        return grad_x, grad_clip * mass, grad_theta

    return forward, backward


@functools.cache
def _relu_floor(relu: bool, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.tensor(0.0 if relu else -math.inf, dtype=dtype, device=device)


def _call_compiled_pact(key: tuple, direction: Direction, args: tuple) -> tuple:
    bits, signed, relu = key
    fns = _compiled("pact", (bits, signed))
    forward = direction == Direction.FORWARD
    x = args[0] if forward else args[1]
    floor = _relu_floor(relu, x.dtype, x.device) if signed else None
    if forward:
        return fns[Direction.FORWARD](*args, floor)
    # the saved output (args[4]) is for the eager path
    return fns[Direction.BACKWARD](*args[:4], floor)


_scratch: dict[tuple, Tensor] = {}


def _scratch_like(x: Tensor) -> Tensor:
    """A reused buffer shaped like the flat ``x``, never returned to callers.

    Fresh large tensors come from the OS as untouched pages and the first write faults each
    one in, which costs more than the pass itself; the eager bodies' temporaries reuse one
    buffer (grown to the largest activation seen) instead.
    """
    key = (x.dtype, x.device)
    buf = _scratch.get(key)
    if buf is None or buf.numel() < x.numel():
        buf = torch.empty(x.numel(), dtype=x.dtype, device=x.device)
        _scratch[key] = buf
    return buf[: x.numel()]


def _pact_eager_bodies(bits: tuple[int, ...], signed: bool, relu: bool):
    """The same computation for the eager path, written to read and write each activation
    as few times as possible (each pass costs about as much as a ReLU):

    - every scalar (clip, ``s_i``, ``step_i``, ``θ_i · step_i``) is read out once as a Python
      number, because ATen's pointwise kernels are several times faster with a number than
      with a 0-d tensor; each is the float32 value the fixed path computes, so at a one-hot θ
      the result is exactly the fixed path's ``k · step``;
    - codes go into one scratch buffer in place (clamping the codes, not the input, so no
      second buffer is needed) and ``θ_i · step_i · k_i`` is accumulated with ``add_``;
    - the straight-through masks are plain comparisons (``x ≥ clip``, ``x ≤ low``: ±inf
      lies beyond the clip, a NaN inside, as on the compiled and fixed paths) and
      ``∂/∂θ_i`` is a dot product with the codes.

    The inputs are flat (see ``mixed_pact_quantize``).
    """

    def scalars(clip: Tensor, theta: Tensor | None = None):
        top = float(clip)
        rows = []
        for i, p in enumerate(bits):
            levels = act_levels(p, signed)
            step = clip / levels
            weight = float(theta[i] * step) if theta is not None else 0.0
            rows.append((p, float(levels / clip), float(step), weight))
        return top, (-top if signed else 0.0), rows

    def codes_into(buf: Tensor, x: Tensor, s: float, p: int) -> Tensor:
        # The fixed path's codes of clamp(x): for x outside the range they land on the end
        # codes (s·clip is within an ulp of the top code, well inside the floor margin).
        levels = act_levels(p, signed)
        torch.mul(x, s, out=buf)
        if signed:
            return buf.round_().clamp_(-levels, levels)
        return buf.add_(floor_margin(levels)).floor_().clamp_(0, levels)

    def forward(x: Tensor, clip: Tensor, theta: Tensor) -> Tensor:
        _, _, rows = scalars(clip, theta)
        buf = _scratch_like(x)
        out = None
        for p, s, _, weight in rows:
            k = codes_into(buf, x, s, p)
            if out is None:
                out = torch.mul(k, weight)
            else:
                out.add_(k, alpha=weight)
        return out.clamp_min_(0) if relu else out

    def backward(grad: Tensor, x: Tensor, clip: Tensor, theta: Tensor, out: Tensor | None):
        # Masks from plain comparisons, not ATen's hardtanh/threshold backward kernels: those
        # treat NaN differently in their vectorised body and their scalar tail, so the result
        # would depend on where in the tensor a NaN sits.
        if relu:
            if out is None:  # saved only when the forward ran on this path
                out = forward(x, clip, theta)
            grad = grad * ~(out <= 0)
        top, low, rows = scalars(clip)
        mass = float(theta.sum())
        above = x >= top  # Python numbers, like every scalar of the eager bodies
        below = x <= low
        grad_clip = torch.where(above, grad, 0.0).sum()
        if signed:
            grad_clip = grad_clip - torch.where(below, grad, 0.0).sum()
        buf = _scratch_like(x)
        flat_grad = grad.reshape(-1)
        grad_theta = torch.stack(
            [torch.dot(flat_grad, codes_into(buf, x, s, p).reshape(-1)) * step
             for p, s, step, _ in rows]
        )
        grad_x = grad.masked_fill_(above | below, 0.0) if relu else grad.masked_fill(
            above | below, 0.0)
        return grad_x.mul_(mass), grad_clip * mass, grad_theta

    return forward, backward


def _minmax_bodies(bits: tuple[int, ...], per_channel: bool):
    def quantize(weight: Tensor, absmax: Tensor, p: int) -> Tensor:
        view = (-1,) + (1,) * (weight.dim() - 1)
        scale = (2 * absmax / (2 ** p - 1)).reshape(view)  # powers: see grid.act_levels
        half = float(2 ** (p - 1))
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
    # With dynamic sizes inductor decides whether a CPU loop runs on all threads from the
    # size of the first call: a body first called on a small tensor (a weight, the last
    # layer's input) would stay single-threaded, its backward reductions 2× slower on two
    # cores. dynamic_threads always emits the parallel loop and lets OpenMP split it.
    # vec_isa_ok trusts the CPU's own list of vector instructions instead of compiling a
    # probe for each (about 6 s of a first compilation); should the compiler still reject
    # one, ``call`` falls back to the eager bodies.
    options = {"cpp.dynamic_threads": True, "cpp.vec_isa_ok": True}
    return tuple(
        torch.compile(fn, dynamic=True, fullgraph=True, options=options) for fn in bodies
    )


@functools.cache
def _eager(kind: str, key: tuple) -> tuple[Callable, Callable]:
    return _pact_eager_bodies(*key) if kind == "pact" else _minmax_bodies(*key)


def call(kind: str, key: tuple, direction: Direction, *args, compiled: bool):
    """Run a body, compiled if ``compiled``; if compilation fails (no C++ compiler,
    unsupported platform), warn once and continue on the eager path for the rest of the
    process.

    ``key`` is ``(bits, signed, relu)`` for ``"pact"`` and ``(bits, per_channel)`` for
    ``"minmax"``.

    The bodies are called from autograd functions, so they get detached tensors: otherwise
    dynamo would compile again for every requires_grad pattern and every parameter shape.
    """
    args = tuple(a.detach() if a is not None else None for a in args)
    if runs_compiled(compiled):
        try:
            if kind == "pact":
                return _call_compiled_pact(key, direction, args)
            return _compiled(kind, key)[direction](*args)
        except Exception as exc:  # inductor raises many kinds; the eager path is exact
            _state["broken"] = True
            warnings.warn(
                f"mpsctl: compiling the fused quantizers failed ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); using the eager path",
                RuntimeWarning, stacklevel=2,
            )
    return _eager(kind, key)[direction](*args)
