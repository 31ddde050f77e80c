"""The integer arithmetic a fixed-precision fake-quant model stands for (no ONNX here).

A fake-quantized activation is ``k · S`` with an integer code ``k`` on its slot's grid; a
fake-quantized weight is ``q[c] · S_w[c]`` and the 32-bit bias is ``b[c] · S_in · S_w[c]``.
So a layer's output is ``S_in · S_w[c] · acc[c]`` with the exact integer accumulator
``acc = Σ q·k + b``, and the next quantizer's code is a function of ``acc`` alone:

- unsigned PACT: ``⌊acc · M[c] + ε⌋`` clamped to ``[0, 2^p − 1]``,
- signed PACT:   ``rne(acc · M[c])`` clamped to ``[−(2^(p−1) − 1), 2^(p−1) − 1]``,

with the real multiplier ``M[c] = S_in · S_w[c] / S_out``. On the device ``M`` becomes an
integer multiplier and a right shift, ``M ≈ m · 2^−shift`` with ``m < 2^23``; the shift is the
largest that keeps ``m`` in range (the smallest relative error, ``< 2^−22``). The rounding
offset is added before the shift: ``⌊(acc·m + r) / 2^shift⌋`` with ``r = round(ε · 2^shift)``
(unsigned) or ``2^(shift−1)`` (signed: round half up, where the fake-quant model rounds half
to even — they differ only on exact ties). That, and ``M``'s 23-bit precision, are the only
places where the integer model can differ from the fake-quant one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mpsctl.errors import UserError
from mpsctl.quant.grid import act_levels, floor_margin
from mpsctl.search.layers import ActivationSlot, SearchableLayer

#: Requantisation multipliers are integers below 2^MULTIPLIER_BITS.
MULTIPLIER_BITS = 23
#: Largest right shift (the int64 arithmetic adds 2^62 to stay non-negative).
MAX_SHIFT = 62
INT32_MAX = 2**31 - 1
#: Widest codes the integer ops (ConvInteger / MatMulInteger) take.
MAX_CODE_BITS = 8


class IntegerOverflowError(UserError):
    """A layer's int32 accumulator could overflow at the chosen precisions."""


class IntegerExportError(UserError):
    """The fixed-precision model cannot be written as integer arithmetic."""


@dataclass(frozen=True)
class ActGrid:
    """The integer grid of an activation quantizer: code ``k`` stands for ``k / inv_scale``.

    ``inv_scale`` and ``clip`` are the float32 values the fake-quant forward uses, so that
    quantizing the float network input in ONNX repeats it operation for operation.
    """

    bits: int
    signed: bool
    clip: float
    inv_scale: float

    @property
    def levels(self) -> int:
        return act_levels(self.bits, self.signed)

    @property
    def scale(self) -> float:
        """Real value of one code."""
        return 1.0 / self.inv_scale

    @property
    def low(self) -> int:
        return -self.levels if self.signed else 0

    @property
    def high(self) -> int:
        return self.levels

    @property
    def floor_eps(self) -> float:
        """The margin the unsigned forward adds before flooring (see ``pact_forward``)."""
        return floor_margin(self.levels)

    @property
    def storage(self) -> str:
        """numpy dtype of the codes: int8 (signed) or uint8 (unsigned)."""
        return "int8" if self.signed else "uint8"

    def describe(self) -> dict:
        return {"bits": self.bits, "signed": self.signed, "scale": self.scale,
                "range": [self.low, self.high]}


def act_grid(slot: ActivationSlot) -> ActGrid:
    """The grid ``slot`` quantizes to at its chosen precision."""
    quantizer = slot.quantizer
    bits = slot.bits[int(slot.choice.assignment())]
    with torch.no_grad():
        clip = quantizer.clip.detach().float().clamp(quantizer.floor,
                                                     getattr(quantizer, "clip_max", None))
        inv_scale = act_levels(bits, quantizer.signed) / clip
    return ActGrid(bits, quantizer.signed, float(clip), float(inv_scale))


@dataclass(frozen=True)
class Requantizer:
    """``⌊(acc · multiplier + offset) / 2^shift⌋`` clamped to ``[low, high]``; one entry per
    output channel (or a single one)."""

    multiplier: np.ndarray
    shift: np.ndarray
    offset: np.ndarray
    low: int
    high: int
    real: np.ndarray

    def apply(self, acc: np.ndarray, axis: int = 1) -> np.ndarray:
        """Reference implementation in int64 numpy (what the ONNX graph computes)."""
        view = _channel_view(self.multiplier.size, acc.ndim, axis)
        m, r, s = (a.reshape(view) for a in (self.multiplier, self.offset, self.shift))
        out = (acc.astype(np.int64) * m + r) >> s  # numpy's >> on int64 floors
        return np.clip(out, self.low, self.high)

    @property
    def max_relative_error(self) -> float:
        """Largest ``|m · 2^−shift − M| / M`` over the channels."""
        live = self.real > 0
        if not live.any():
            return 0.0
        approx = self.multiplier[live] / np.exp2(self.shift[live].astype(np.float64))
        return float(np.max(np.abs(approx - self.real[live]) / self.real[live]))


def fixed_point(real: np.ndarray, bits: int = MULTIPLIER_BITS) -> tuple[np.ndarray, np.ndarray]:
    """Integer multipliers ``m < 2^bits`` and shifts with ``m · 2^−shift ≈ real`` (≥ 0),
    each shift the largest that keeps ``m`` below ``2^bits`` (at most ``MAX_SHIFT``)."""
    real = np.atleast_1d(np.asarray(real, dtype=np.float64))
    if np.any(real < 0) or not np.all(np.isfinite(real)):
        raise ValueError(f"requantisation multipliers must be finite and ≥ 0, got {real}")
    mult = np.zeros(real.shape, dtype=np.int64)
    shift = np.full(real.shape, MAX_SHIFT, dtype=np.int64)
    for i, value in enumerate(real):
        if value == 0:
            continue
        s = min((bits - 1) - int(np.floor(np.log2(value))), MAX_SHIFT)
        m = int(round(value * 2.0**s))
        if m >= 1 << bits:  # log2 rounding at a power of two
            s -= 1
            m = int(round(value * 2.0**s))
        if s < 1:
            raise IntegerExportError(
                f"requantisation multiplier {value:.3g} is too large for a {bits}-bit "
                "multiplier and a right shift (an activation clip far below its input's scale?)"
            )
        mult[i], shift[i] = m, s
    return mult, shift


def requantizer(real: np.ndarray, grid: ActGrid) -> Requantizer:
    """Integer requantisation of an accumulator with real scale ``real / grid.inv_scale``."""
    real = np.atleast_1d(np.asarray(real, dtype=np.float64))
    mult, shift = fixed_point(real)
    if grid.signed:
        offset = np.left_shift(np.int64(1), shift - 1)
    else:
        offset = np.round(grid.floor_eps * np.exp2(shift.astype(np.float64))).astype(np.int64)
    return Requantizer(mult, shift, offset, grid.low, grid.high, real)


@dataclass
class IntegerLayer:
    """A conv / linear layer as integers: weight codes (per channel within their bit-width
    range), int32 bias codes, and the real scale of one accumulator unit per channel."""

    name: str
    op: str
    conv_args: dict
    weight: np.ndarray
    w_bits: list[int]
    w_scale: np.ndarray
    bias: np.ndarray | None
    in_grid: ActGrid
    acc_scale: np.ndarray

    @property
    def channels(self) -> int:
        return int(self.weight.shape[0])

    def accumulator_bound(self) -> np.ndarray:
        """Per output channel, ``Σ |q| · max|x| + |b|``: no input can push ``|acc|`` higher."""
        bound = np.abs(self.weight.astype(np.int64)).reshape(self.channels, -1).sum(1)
        bound = bound * max(abs(self.in_grid.low), self.in_grid.high)
        if self.bias is not None:
            bound = bound + np.abs(self.bias.astype(np.int64))
        return bound

    def check_overflow(self) -> None:
        """Raise :class:`IntegerOverflowError` if some input could overflow int32."""
        bound = self.accumulator_bound()
        worst = int(np.argmax(bound))
        if bound[worst] > INT32_MAX:
            raise IntegerOverflowError(
                f"layer '{self.name}' can overflow its int32 accumulator: output channel "
                f"{worst} reaches {int(bound[worst]):,} > 2^31-1 "
                f"(Σ|w|·{max(-self.in_grid.low, self.in_grid.high)} + |bias|); lower its weight "
                "or input precision, or keep it in float with search.exclude"
            )


def _channel_view(channels: int, ndim: int, axis: int) -> tuple[int, ...]:
    if channels == 1:
        return (1,) * ndim
    view = [1] * ndim
    view[axis] = channels
    return tuple(view)


def weight_codes(
    name: str, layer: SearchableLayer, max_bits: int = MAX_CODE_BITS
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Integer weight codes, per-channel weight scales and bit-widths of a frozen layer
    (codes as int8 up to 8 bits, else int32)."""
    choice = layer.choice
    index = choice.assignment()
    bits_all = [choice.bits[int(i)] for i in index.expand(layer.weight.shape[0])]
    if max(bits_all) > max_bits:
        raise IntegerExportError(
            f"layer '{name}' has {max(bits_all)}-bit weights; ONNX export stores weight codes "
            f"as int8 (up to {max_bits} bits: give it fewer bits)"
        )
    with torch.no_grad():
        weight, _ = layer.quantized_parameters()
        absmax = layer._weight_absmax()
        scale = layer.weight_quantizer.fixed_scales(layer.weight, index, absmax)
        view = (-1,) + (1,) * (weight.dim() - 1)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale)).reshape(view)
        codes = torch.round(weight.double() / safe.double())
    codes_np = codes.numpy().astype(np.int64)
    for c, p in enumerate(bits_all):
        low, high = (-(1 << (p - 1)), max((1 << (p - 1)) - 1, 1)) if p else (0, 0)
        row = codes_np[c]
        if row.min(initial=0) < low or row.max(initial=0) > high:
            raise IntegerExportError(
                f"layer '{name}' channel {c}: weight codes leave the {p}-bit range"
            )
    storage = np.int8 if max(bits_all) <= MAX_CODE_BITS else np.int32
    return codes_np.astype(storage), scale.double().numpy(), bits_all


def bias_codes(layer: SearchableLayer, in_grid: ActGrid) -> np.ndarray | None:
    """int32 bias codes, computed as the fake-quant forward computes them (float32)."""
    if layer.bias is None:
        return None
    slot = layer.input_slot
    with torch.no_grad():
        s_in = slot.scales()[int(slot.choice.assignment())]
        s_w = layer.weight_quantizer.fixed_scales(
            layer.weight, layer.choice.assignment(), layer._weight_absmax()
        )
        s_b = s_in * s_w
        live = s_b.abs() > 1e-30
        q = torch.round(layer.bias.detach() / torch.where(live, s_b, torch.ones_like(s_b)))
        q = torch.where(live, q, torch.zeros_like(q))
    q_np = np.clip(q.double().numpy(), -(2**31), INT32_MAX)
    return q_np.astype(np.int32)


def integer_layer(name: str, layer: SearchableLayer, max_bits: int = MAX_CODE_BITS
                  ) -> IntegerLayer:
    """The integer form of a frozen searchable layer (``max_bits``: the widest codes the
    target format stores; QONNX has no 8-bit limit)."""
    in_grid = act_grid(layer.input_slot)
    if in_grid.bits > max_bits:
        raise IntegerExportError(
            f"layer '{name}' reads {in_grid.bits}-bit activations; ONNX export stores codes "
            f"as int8/uint8 (up to {max_bits} bits: give it fewer bits)"
        )
    codes, w_scale, w_bits = weight_codes(name, layer, max_bits)
    bias = bias_codes(layer, in_grid)
    return IntegerLayer(
        name=name,
        op=layer.op,
        conv_args=dict(layer.conv_args),
        weight=codes,
        w_bits=w_bits,
        w_scale=w_scale,
        bias=bias,
        in_grid=in_grid,
        acc_scale=w_scale * in_grid.scale,
    )
