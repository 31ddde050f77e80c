"""The search space a supernet is built from: plain data, no YAML (the recipe layer maps to it)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from torch import nn


@dataclass(frozen=True)
class LayerOverride:
    """Per-layer settings for module names matching the glob ``pattern``."""

    pattern: str
    weight_bits: tuple[int, ...] | None = None
    act_bits: tuple[int, ...] | None = None
    weight_quantizer: str | None = None
    act_quantizer: str | None = None
    options: dict = field(default_factory=dict)

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.pattern)


@dataclass(frozen=True)
class SearchSpace:
    """Candidate precisions and quantizer choices for every searchable layer.

    ``act_bits`` apply to each layer's output quantizer, to the network input quantizer
    (override pattern ``input``) and to add quantizers; ``weight_bits`` may hold 0 only with
    ``per_channel``. ``exclude`` holds module-name globs or layer type names kept in float.
    ``compile`` chooses the quantizers' path (``MPSCTL_FUSED=0`` still forces eager).
    """

    weight_bits: tuple[int, ...] = (2, 4, 8)
    act_bits: tuple[int, ...] = (2, 4, 8)
    per_channel: bool = False
    weight_quantizer: str = "minmax"
    act_quantizer: str = "pact"
    exclude: tuple[str, ...] = ()
    overrides: tuple[LayerOverride, ...] = ()
    min_channels: int = 1
    compensate: bool = False
    input_clip: float = 1.0
    act_clip: float = 6.0
    input_signed: bool = False
    #: Run the mixture quantizers' compiled (fused) bodies; False: the eager ones.
    compile: bool = True

    def excludes(self, name: str, module: nn.Module) -> bool:
        type_names = {type(module).__name__, f"nn.{type(module).__name__}",
                      f"torch.nn.{type(module).__name__}"}
        return any(
            pattern in type_names or fnmatch.fnmatchcase(name, pattern)
            for pattern in self.exclude
        )

    def override_for(self, name: str) -> LayerOverride | None:
        """Every override whose pattern matches ``name``, merged field by field (a later
        entry wins only for the fields it sets; options are merged key by key)."""
        found = None
        for o in self.overrides:
            if not o.matches(name):
                continue
            if found is None:
                found = o
                continue
            found = LayerOverride(
                pattern=o.pattern,
                weight_bits=o.weight_bits if o.weight_bits is not None else found.weight_bits,
                act_bits=o.act_bits if o.act_bits is not None else found.act_bits,
                weight_quantizer=o.weight_quantizer or found.weight_quantizer,
                act_quantizer=o.act_quantizer or found.act_quantizer,
                options={**found.options, **o.options},
            )
        return found

    def weight_bits_for(self, name: str) -> tuple[tuple[int, ...], bool]:
        """Weight precisions for a layer and whether an override set them explicitly."""
        o = self.override_for(name)
        if o is not None and o.weight_bits is not None:
            return tuple(sorted(o.weight_bits)), True
        return tuple(sorted(self.weight_bits)), False

    def act_bits_for(self, name: str) -> tuple[tuple[int, ...], bool]:
        o = self.override_for(name)
        if o is not None and o.act_bits is not None:
            return tuple(sorted(o.act_bits)), True
        return tuple(sorted(self.act_bits)), False

    def weight_quantizer_for(self, name: str) -> str:
        o = self.override_for(name)
        return o.weight_quantizer if o is not None and o.weight_quantizer else self.weight_quantizer

    def act_quantizer_for(self, name: str) -> tuple[str, dict]:
        o = self.override_for(name)
        if o is None:
            return self.act_quantizer, {}
        return o.act_quantizer or self.act_quantizer, dict(o.options)
