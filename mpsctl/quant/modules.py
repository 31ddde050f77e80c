"""Quantizer modules with learnable state, and the registry recipes pick them from.

A weight quantizer handles every candidate precision of one layer: ``mixed`` gives the
expected weights under choice weights θ, ``fixed`` the weights at one precision per channel.
``compiled`` (given when the quantizer is built; None: as the environment allows) picks the
fused, compiled mixture bodies or the eager ones (:mod:`mpsctl.quant.fused`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from mpsctl.quant.activation import mixed_pact_quantize, pact_quantize
from mpsctl.quant.fused import compiler_allowed
from mpsctl.quant.grid import act_scale
from mpsctl.quant.lsq import lsq_init_step, lsq_quantize
from mpsctl.quant.weight import (
    channel_absmax,
    minmax_quantize,
    minmax_scale,
    mixed_minmax_quantize,
)


class WeightQuantizer(nn.Module):
    """Base of weight quantizers over candidate precisions ``bits`` (ascending, may hold 0)."""

    def __init__(self, bits: Sequence[int], compiled: bool | None = None) -> None:
        super().__init__()
        self.bits = tuple(int(b) for b in bits)
        self.compiled = compiler_allowed() if compiled is None else bool(compiled)
        self.register_buffer("bits_tensor", torch.tensor(self.bits), persistent=False)

    # ``absmax`` (optional, ``(Cout,)``) is the per-channel statistic to use instead of
    # ``max|W[c]|``: the supernet passes it when a producer's pruned channels must not count.

    def mixed(self, weight: Tensor, theta: Tensor, absmax: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def fixed(self, weight: Tensor, index: Tensor, absmax: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def scales(self, weight: Tensor, absmax: Tensor | None = None) -> Tensor:
        """Per-candidate, per-channel weight scales ``(n, Cout)``; 0 for 0-bit candidates."""
        raise NotImplementedError

    def fixed_scales(self, weight: Tensor, index: Tensor, absmax: Tensor | None = None) -> Tensor:
        """Scales ``(Cout,)`` at the chosen candidate of each channel."""
        all_scales = self.scales(weight, absmax)
        index = index.expand(all_scales.shape[1])
        return all_scales.gather(0, index.reshape(1, -1)).squeeze(0)

    def keep_channels(self, keep: Tensor) -> None:
        """Drop per-channel state of removed output channels (export)."""


class MinMaxWeightQuantizer(WeightQuantizer):
    """Symmetric per-channel min-max (docs/algorithm.md#weights-symmetric-min-max); stateless."""

    def __init__(
        self, bits: Sequence[int], weight: Tensor | None = None, compiled: bool | None = None
    ) -> None:
        super().__init__(bits, compiled)

    def mixed(self, weight: Tensor, theta: Tensor, absmax: Tensor | None = None) -> Tensor:
        return mixed_minmax_quantize(weight, theta, self.bits, absmax, self.compiled)

    def fixed(self, weight: Tensor, index: Tensor, absmax: Tensor | None = None) -> Tensor:
        return minmax_quantize(weight, self.bits_tensor[index], absmax)

    def scales(self, weight: Tensor, absmax: Tensor | None = None) -> Tensor:
        absmax = channel_absmax(weight) if absmax is None else absmax
        return minmax_scale(absmax.unsqueeze(0), self.bits_tensor.unsqueeze(1))


class LSQWeightQuantizer(WeightQuantizer):
    """Learned per-channel step for each candidate precision, initialised from the weights."""

    def __init__(
        self, bits: Sequence[int], weight: Tensor, compiled: bool | None = None
    ) -> None:
        super().__init__(bits, compiled)
        steps = [
            lsq_init_step(weight, b) if b else torch.zeros(weight.shape[0]) for b in self.bits
        ]
        self.step = nn.Parameter(torch.stack(steps))

    def mixed(self, weight: Tensor, theta: Tensor, absmax: Tensor | None = None) -> Tensor:
        view = (-1,) + (1,) * (weight.dim() - 1)
        out = torch.zeros_like(weight)
        for j, b in enumerate(self.bits):
            if b == 0:
                continue
            t = theta[j].reshape(view) if theta.dim() == 2 else theta[j]
            out = out + t * lsq_quantize(weight, self.step[j], b)
        return out

    def fixed(self, weight: Tensor, index: Tensor, absmax: Tensor | None = None) -> Tensor:
        index = index.expand(weight.shape[0])
        out = torch.zeros_like(weight)
        for j, b in enumerate(self.bits):
            rows = index == j
            if b == 0 or not bool(rows.any()):
                continue
            mask = rows.reshape((-1,) + (1,) * (weight.dim() - 1))
            out = torch.where(mask, lsq_quantize(weight, self.step[j], b), out)
        return out

    def scales(self, weight: Tensor, absmax: Tensor | None = None) -> Tensor:
        live = (self.bits_tensor > 0).unsqueeze(1)
        return torch.where(live, self.step.abs().clamp_min(1e-8), torch.zeros_like(self.step))

    def keep_channels(self, keep: Tensor) -> None:
        self.step = nn.Parameter(self.step.detach()[:, keep].clone())


class PACTActivationQuantizer(nn.Module):
    """PACT with a learned clip (unsigned, or signed where no ReLU follows).

    ``clip_max`` bounds the clip where a bounded activation (ReLU6, ``Hardtanh(0, m)``)
    follows: above the bound the activation would cut the quantized range and its gradient
    is exactly 0 there, so a clip that got above could never come back. The clip starts at
    or below the bound and is projected back onto it before every training forward.
    """

    def __init__(
        self, bits: Sequence[int], clip: float = 6.0, signed: bool = False, floor: float = 1e-3,
        compiled: bool | None = None, clip_max: float | None = None,
    ) -> None:
        super().__init__()
        self.bits = tuple(int(b) for b in bits)
        self.compiled = compiler_allowed() if compiled is None else bool(compiled)
        self.signed = signed
        self.floor = floor
        if clip_max is not None and not clip_max > floor:
            raise ValueError(f"clip_max must exceed the clip floor {floor}, got {clip_max}")
        self.clip_max = None if clip_max is None else float(clip_max)
        start = float(clip) if clip_max is None else min(float(clip), self.clip_max)
        self.clip = nn.Parameter(torch.tensor(start))

    def _clip(self) -> Tensor:
        if self.clip_max is not None and self.training:
            with torch.no_grad():  # projection: the optimizer may have stepped past the bound
                self.clip.clamp_(max=self.clip_max)
        # Floor (and bound) the value but keep the gradient, so a large step cannot divide by
        # zero (and a clip read from elsewhere cannot exceed the bound).
        return self.clip + (self.clip.clamp(self.floor, self.clip_max) - self.clip).detach()

    def mixed(self, x: Tensor, theta: Tensor, relu: bool = False) -> Tensor:
        return mixed_pact_quantize(x, self._clip().to(x.dtype), theta.to(x.dtype), self.bits,
                                   self.signed, relu, self.compiled)

    def fixed(self, x: Tensor, index: int) -> Tensor:
        return pact_quantize(x, self._clip().to(x.dtype), self.bits[index], self.signed)

    def scales(self) -> Tensor:
        """Step of each candidate precision ``(n,)`` (detached: used for bias scales)."""
        clip = self._clip().detach()
        return torch.stack([act_scale(clip, b, self.signed) for b in self.bits])

    def extra_repr(self) -> str:
        bound = "" if self.clip_max is None else f", clip_max={self.clip_max:g}"
        return f"bits={self.bits}, signed={self.signed}{bound}"


WeightQuantizerFactory = Callable[..., WeightQuantizer]

WEIGHT_QUANTIZERS: dict[str, WeightQuantizerFactory] = {
    "minmax": MinMaxWeightQuantizer,
    "lsq": LSQWeightQuantizer,
}
ACTIVATION_QUANTIZERS: dict[str, type[PACTActivationQuantizer]] = {
    "pact": PACTActivationQuantizer,
}


def make_weight_quantizer(
    name: str, bits: Sequence[int], weight: Tensor, compiled: bool | None = None
) -> WeightQuantizer:
    """Build the weight quantizer registered as ``name``."""
    try:
        factory = WEIGHT_QUANTIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown weight quantizer {name!r} (available: {', '.join(WEIGHT_QUANTIZERS)})"
        ) from None
    return factory(bits, weight, compiled=compiled)


def make_activation_quantizer(name: str, bits: Sequence[int], **options) -> PACTActivationQuantizer:
    """Build the activation quantizer registered as ``name``."""
    try:
        cls = ACTIVATION_QUANTIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation quantizer {name!r} (available: {', '.join(ACTIVATION_QUANTIZERS)})"
        ) from None
    return cls(bits, **options)
