"""Searchable convolution / linear layers: one conv with the effective quantized weights.

Weights are ``Ŵ = Σ_j θ_j Q_{p_j}(W)`` (θ per layer or per output channel) and the bias is
quantized at 32 bits with the scale ``s_in · s_w[c]`` of each (input, weight) precision pair,
so a 0-bit channel's bias vanishes with its weights (docs/algorithm.md#bias). In eval mode, or once
the choice is frozen, the layer runs at the argmax precision through the fixed path.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mpsctl.cost.base import LayerGeometry, LayerKind
from mpsctl.enums import StrEnum
from mpsctl.quant.bias import quantize_bias
from mpsctl.quant.modules import PACTActivationQuantizer, WeightQuantizer
from mpsctl.quant.weight import channel_absmax
from mpsctl.search.choice import PrecisionChoice


class LayerOp(StrEnum):
    """The functional op a searchable layer runs."""

    CONV1D = "conv1d"
    CONV2D = "conv2d"
    LINEAR = "linear"


class ActivationSlot(nn.Module):
    """An activation quantizer and the precision choice that drives it (per layer)."""

    def __init__(self, quantizer: PACTActivationQuantizer, choice: PrecisionChoice) -> None:
        super().__init__()
        self.quantizer = quantizer
        self.choice = choice

    @property
    def bits(self) -> tuple[int, ...]:
        return self.quantizer.bits

    def forward(self, x: Tensor, relu: bool = False) -> Tensor:
        """Quantize ``x``; ``relu`` applies the ReLU that the graph had right after a signed
        quantizer (fused into one pass while searching, see ``convert``)."""
        if self.choice.is_fixed or not self.training:
            out = self.quantizer.fixed(x, int(self.choice.assignment()))
            return torch.relu(out) if relu else out
        return self.quantizer.mixed(x, self.choice.theta(), relu)

    def scales(self) -> Tensor:
        return self.quantizer.scales()


class SearchableLayer(nn.Module):
    """A Conv1d/Conv2d/Linear whose weights and bias are fake-quantized over candidates.

    ``choice`` (the weight precision choice, possibly shared with other layers) and
    ``input_slot`` (the activation quantizer feeding this layer) are owned by the supernet;
    the layer only refers to them, so they are not registered here.
    """

    def __init__(
        self,
        source: nn.Conv1d | nn.Conv2d | nn.Linear,
        weight_quantizer: WeightQuantizer,
        geometry: LayerGeometry,
    ) -> None:
        super().__init__()
        if isinstance(source, nn.Linear):
            self.op = LayerOp.LINEAR
            self.conv_args: dict = {}
        else:
            self.op = LayerOp.CONV1D if isinstance(source, nn.Conv1d) else LayerOp.CONV2D
            self.conv_args = {
                "stride": source.stride,
                "padding": source.padding,
                "dilation": source.dilation,
                "groups": source.groups,
            }
        self.source_type = type(source).__name__
        self.weight = nn.Parameter(source.weight.detach().clone())
        bias = source.bias
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None
        self.weight_quantizer = weight_quantizer
        self.geometry = geometry
        #: Output channels before export removed any (for reports).
        self.original_out_channels = geometry.cout
        self.__dict__["choice"] = None
        self.__dict__["input_slot"] = None
        self.__dict__["cin_source"] = None

    def attach(
        self,
        choice: PrecisionChoice,
        input_slot: ActivationSlot,
        cin_source: tuple[PrecisionChoice, int] | None = None,
    ) -> None:
        """Point the layer at its (shared) weight choice, its input quantizer and, where its
        input channels come from a searchable producer, that producer's choice and the
        flatten factor (input features per producer channel)."""
        self.__dict__["choice"] = choice
        self.__dict__["input_slot"] = input_slot
        self.__dict__["cin_source"] = cin_source

    def kept_out_channels(self) -> int:
        """Output channels this layer keeps at the current assignment."""
        choice: PrecisionChoice = self.choice
        if choice.per_channel and choice.can_prune:
            return int((choice.assignment() != 0).sum())
        return self.geometry.cout

    def kept_in_channels(self) -> int:
        """Input channels (features, after a flatten) it reads at the current assignment."""
        if self.geometry.kind == LayerKind.DEPTHWISE:
            return self.kept_out_channels()
        if self.cin_source is None:
            return self.geometry.cin
        producer, factor = self.cin_source
        if producer.per_channel and producer.can_prune:
            return int((producer.assignment() != 0).sum()) * factor
        return self.geometry.cin

    def _weight_absmax(self, soft: bool = False) -> Tensor | None:
        """Per-channel ``max|W|`` when the producer can prune input channels; else None.

        Hard (eval, frozen, export): over the input channels the producer keeps, so the
        supernet quantizes exactly as the exported layer will. Soft (training): each input
        channel's ``|W|`` weighted by the producer's keep probability ``1 - θ_0`` of this
        step, which is continuous in α (an argmax flip no longer jumps the statistic) and
        equals the hard statistic once θ is one-hot.
        """
        if self.cin_source is None:
            return None
        producer, factor = self.cin_source
        if not (producer.per_channel and producer.can_prune):
            return None
        if soft:
            keep = (1 - producer.theta()[0]).detach().to(self.weight.dtype)
            return channel_absmax(self.weight, keep.repeat_interleave(factor))
        alive = producer.assignment() != 0
        if bool(alive.all()):
            return None
        return channel_absmax(self.weight, alive.repeat_interleave(factor))

    def quantized_parameters(self) -> tuple[Tensor, Tensor | None]:
        """The effective weight and bias this layer computes with right now."""
        choice: PrecisionChoice = self.choice
        slot: ActivationSlot = self.input_slot
        quantizer = self.weight_quantizer
        if choice.is_fixed or not self.training:
            absmax = self._weight_absmax()
            index = choice.assignment()
            weight = quantizer.fixed(self.weight, index, absmax)
            if self.bias is None:
                return weight, None
            s_in = slot.scales()[int(slot.choice.assignment())]
            s_w = quantizer.fixed_scales(self.weight, index, absmax)
            return weight, quantize_bias(self.bias, s_in * s_w)
        absmax = self._weight_absmax(soft=True)
        theta_w = choice.theta()
        weight = quantizer.mixed(self.weight, theta_w, absmax)
        if self.bias is None:
            return weight, None
        theta_in = slot.choice.theta()
        scales = slot.scales().reshape(-1, 1, 1) * quantizer.scales(self.weight, absmax)
        q_bias = quantize_bias(self.bias, scales)  # (n_in, n_w, Cout)
        if theta_w.dim() == 1:
            theta_w = theta_w.unsqueeze(1)
        return weight, torch.einsum("i,jc,ijc->c", theta_in, theta_w, q_bias)

    #: Run a 2-d convolution in channels-last memory format (set by the supernet): given a
    #: channels-last weight, the convolution takes and gives channels-last activations.
    channels_last = False

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.quantized_parameters()
        if self.op == LayerOp.LINEAR:
            return F.linear(x, weight, bias)
        if self.op == LayerOp.CONV1D:
            return F.conv1d(x, weight, bias, **self.conv_args)
        if self.channels_last:
            weight = weight.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, weight, bias, **self.conv_args)

    def keep_channels(self, keep_out: Tensor | None, keep_in: Tensor | None) -> None:
        """Physically remove output channels (and the matching input channels) for export."""
        weight = self.weight.detach()
        bias = self.bias.detach() if self.bias is not None else None
        depthwise = self.geometry.kind == LayerKind.DEPTHWISE
        if keep_out is not None:
            weight = weight[keep_out]
            bias = bias[keep_out] if bias is not None else None
            self.weight_quantizer.keep_channels(keep_out)
        if keep_in is not None and not depthwise:
            weight = weight[:, keep_in]
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone()) if bias is not None else None
        cout, cin = weight.shape[0], weight.shape[1] * self.conv_args.get("groups", 1)
        groups = self.conv_args.get("groups", 1)
        if depthwise:
            groups = cin = cout
            self.conv_args["groups"] = cout
        self.geometry = dataclasses.replace(self.geometry, cin=cin, cout=cout, groups=groups)

    def extra_repr(self) -> str:
        g = self.geometry
        return f"{self.source_type}({g.cin}→{g.cout}, kind={g.kind}, kernel={g.kernel})"
