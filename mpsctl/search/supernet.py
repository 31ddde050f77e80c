"""The supernet: a converted graph plus the weight choices its layers share.

It samples every choice once per forward (so shared choices and the cost see one θ),
exposes the architecture parameters, computes costs, and hardens into the fixed-precision
model that export writes (docs/algorithm.md#export).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, fx, nn

from mpsctl.cost.base import CostModel
from mpsctl.search.choice import PrecisionChoice
from mpsctl.search.expected import exact_layer_cost, expected_theta, layer_cost
from mpsctl.search.layers import ActivationSlot, LayerOp, SearchableLayer
from mpsctl.targets.registry import build_cost_model


class Supernet(nn.Module):
    """A searchable (or, once hardened, fixed-precision) fake-quantized network."""

    def __init__(
        self,
        net: fx.GraphModule,
        weight_choices: nn.ModuleDict,
        cost_models: Mapping[str, CostModel] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.weight_choices = weight_choices
        #: The cost models this supernet is measured with, by name (e.g. an NE16 model
        #: with a recipe's constants); a name not given gets the registry's default.
        self.cost_models: dict[str, CostModel] = dict(cost_models or {})

    # -- structure ---------------------------------------------------------------------
    def layers(self) -> Iterator[tuple[str, SearchableLayer]]:
        for name, module in self.net.named_modules():
            if isinstance(module, SearchableLayer):
                yield name, module

    def activation_slots(self) -> Iterator[tuple[str, ActivationSlot]]:
        yield from self.net.act_quants.items()

    def choices(self) -> Iterator[tuple[str, PrecisionChoice]]:
        """Every choice by a stable name: ``weight.<group>`` and ``act.<slot>``."""
        for name, choice in self.weight_choices.items():
            yield f"weight.{name}", choice
        for name, slot in self.activation_slots():
            yield f"act.{name}", slot.choice

    @property
    def is_fixed(self) -> bool:
        return all(choice.is_fixed for _, choice in self.choices())

    # -- training ------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        self.sample_choices()
        return self.net(x)

    def sample_choices(self) -> None:
        for _, choice in self.choices():
            choice.sample()

    def arch_parameters(self) -> list[nn.Parameter]:
        """Logits α and learned activation clips: trained by the architecture optimizer."""
        params = [c.alpha for _, c in self.choices() if c.alpha is not None]
        params += [slot.quantizer.clip for _, slot in self.activation_slots()]
        return params

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def set_channels_last(self, enabled: bool) -> None:
        """Run the 2-d convolutions in channels-last memory format. On CPUs this is much
        faster (oneDNN's NCHW kernels are slow, above all for 3-channel inputs); the
        activation quantizers work in memory order either way."""
        for _, layer in self.layers():
            layer.channels_last = bool(enabled) and layer.op == LayerOp.CONV2D

    def soft_eval(self) -> None:
        """Evaluate the θ mixture: the choices, quantizers and searchable layers in training
        mode (they mix precisions), every other module in eval mode, so that a float
        BatchNorm the converter could not fold keeps its statistics (in training mode
        the validation batches would overwrite them) and dropout is off."""
        self.eval()
        for module in self.modules():
            if isinstance(module, (PrecisionChoice, ActivationSlot, SearchableLayer)):
                module.training = True

    def set_temperature(self, temperature: float) -> None:
        for _, choice in self.choices():
            choice.temperature = float(temperature)

    def set_mode(self, mode: str) -> None:
        for _, choice in self.choices():
            choice.mode = mode

    # -- costs -----------------------------------------------------------------------------
    def cost_model(self, name: str) -> CostModel:
        """The model behind cost ``name``: the one given at build time, else the default."""
        model = self.cost_models.get(name)
        if model is None:
            model = self.cost_models[name] = build_cost_model(name)
        return model

    def cost(self, name: str, hard: bool = False) -> Tensor:
        """Model cost under ``name``: expected under θ, or exact for the argmax (``hard``)."""
        return sum(self.layer_costs(name, hard).values(), torch.zeros(()))

    def layer_costs(self, name: str, hard: bool = False) -> dict[str, Tensor]:
        model = self.cost_model(name)
        if hard:  # from integer channel counts: a model's exact value (no smoothing)
            return {n: exact_layer_cost(layer, model) for n, layer in self.layers()}
        return {n: layer_cost(layer, model, expected_theta) for n, layer in self.layers()}

    # -- assignment and export ---------------------------------------------------------------
    def assignment(self) -> dict[str, Tensor]:
        """Index into each choice's ``bits`` of the chosen precision (per layer or channel)."""
        return {name: choice.assignment().clone() for name, choice in self.choices()}

    def compensate_pruning(self) -> None:
        """Scale weights by ``1 / Σ_{p≠0} θ_p`` so the expected weight starts at W
        (docs/algorithm.md#pruning-with-0-bits)."""
        with torch.no_grad():
            for _, layer in self.layers():
                choice = layer.choice
                if choice.per_channel and choice.can_prune:
                    live = choice.soft_theta()[1:].sum(0)
                    view = (-1,) + (1,) * (layer.weight.dim() - 1)
                    layer.weight.div_(live.reshape(view))

    def harden(self, assignment: dict[str, Tensor] | None = None) -> Supernet:
        """A fixed-precision copy at ``assignment`` (default: the argmax) with 0-bit channels
        removed, the consumers' matching input channels too, channel order preserved."""
        assignment = self.assignment() if assignment is None else assignment
        fixed = copy.deepcopy(self).eval()
        choices = dict(fixed.choices())
        missing = set(choices) - set(assignment)
        if missing:
            raise KeyError(f"assignment lacks choices: {sorted(missing)}")
        for name, choice in choices.items():
            choice.freeze(assignment[name].to(torch.long))
        kept = {id(c): _kept_channels(c) for c in choices.values()}
        for _, layer in fixed.layers():
            keep_out = kept[id(layer.choice)]
            keep_in = None
            if layer.cin_source is not None:
                producer, factor = layer.cin_source
                keep_in = _expand(kept[id(producer)], factor)
            layer.keep_channels(keep_out, keep_in)
        for choice in choices.values():
            if kept[id(choice)] is not None:
                choice.keep_channels(kept[id(choice)])
        fixed.net.recompile()
        return fixed

    def kept_channels(self) -> dict[str, list[int]]:
        """Indices of the output channels each pruning choice keeps (in original order)."""
        out = {}
        for name, choice in self.choices():
            keep = _kept_channels(choice)
            if keep is not None:
                out[name] = keep.tolist()
        return out


def _kept_channels(choice: PrecisionChoice) -> Tensor | None:
    if not (choice.per_channel and choice.can_prune):
        return None
    return torch.nonzero(choice.assignment() != 0).flatten()


def _expand(keep: Tensor | None, factor: int) -> Tensor | None:
    """Channel indices → flattened feature indices (``factor`` features per channel)."""
    if keep is None or factor == 1:
        return keep
    return (keep.unsqueeze(1) * factor + torch.arange(factor)).flatten()
