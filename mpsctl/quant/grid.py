"""The PACT activation grid, in one place: code range, step, and the flooring margin.

Every path that turns activations into codes (the fake-quant forward, the fused and eager
mixture bodies, the integer ONNX export) uses these, so they agree to the last code. The
formulas: docs/algorithm.md#the-integer-grid.
"""

from __future__ import annotations

from torch import Tensor

#: Added to ``x · levels / clip`` before flooring so a value already on the grid (``k`` steps,
#: computed in floats) maps back to code ``k`` instead of ``k - 1`` through round-off.
FLOOR_EPS = 1e-4


def act_levels(bits: int, signed: bool) -> int:
    """Largest code magnitude: 2^p - 1 unsigned, 2^(p-1) - 1 signed (at least 1)."""
    # powers, not shifts: inside a compiled body under torch 2.11 the bit-width can be a
    # symbolic int, and its shape arithmetic evaluates ``2 ** p`` but not ``1 << p``
    return max(2 ** (bits - 1) - 1, 1) if signed else 2 ** bits - 1


def act_scale(clip: Tensor, bits: int, signed: bool) -> Tensor:
    """Quantization step ``clip / levels``: the value of one integer code."""
    return clip / act_levels(bits, signed)


def floor_margin(levels: int) -> float:
    """The margin an unsigned grid of ``levels`` codes adds before flooring.

    The round-off in ``s · (k · step)`` grows with the code ``k``: the margin widens above
    8 bits so that re-quantizing a quantized value stays exact (float32 at 16 bits:
    ulp(65535) ≈ 0.004).
    """
    return FLOOR_EPS * max(1.0, levels / 255)
