"""A target described by a YAML file alone (``configs/targets/template.yaml``).

``cycles = overhead_per_layer + Σ_groups MACs / macs_per_cycle[act bits][weight bits]``,
where each weight-precision group's MACs count its output channels rounded up to
``cout_multiple`` and the input channels rounded up to ``cin_multiple`` (a vector unit that
processes channels in fixed-size chunks). ``energy_per_cycle``, when given, turns cycles
into joules. MPIC is this model with its table, no overhead and no rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from mpsctl.cost.base import CostModel, LayerGeometry
from mpsctl.targets.common import Quantity, if_nonzero, macs, round_up
from mpsctl.targets.constants import Fields, MacsPerCycle, read_constants_file

KEYS = ("macs_per_cycle", "overhead_per_layer", "cout_multiple", "cin_multiple",
        "energy_per_cycle")


@dataclass(frozen=True)
class CustomConstants:
    """One user-described MCU: its MACs-per-cycle table, overhead, rounding and energy."""

    macs_per_cycle: MacsPerCycle
    overhead_per_layer: float = 0.0
    cout_multiple: int = 1
    cin_multiple: int = 1
    energy_per_cycle: float | None = None

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str) -> CustomConstants:
        f = Fields(data, source, "target", KEYS)
        return cls(f.table("macs_per_cycle"), f.number("overhead_per_layer", 0.0, positive=False),
                   f.integer("cout_multiple", 1), f.integer("cin_multiple", 1),
                   f.optional_number("energy_per_cycle"))

    @property
    def rounds(self) -> bool:
        """Whether channel rounding can make promoting channels pay off (``refine``)."""
        return self.cout_multiple > 1 or self.cin_multiple > 1


def load_custom_constants(path: str | Path) -> CustomConstants:
    return CustomConstants.from_mapping(read_constants_file(path, "target"), str(path))


def custom_group_cycles(
    geom: LayerGeometry,
    act_bits: Quantity,
    weight_bits: Quantity,
    cin: Quantity,
    cout: Quantity,
    constants: CustomConstants,
) -> Quantity:
    """Cycles of the MACs of one weight-precision group (overhead excluded).

    Tensors broadcast (the search; NaN for a pair outside the table); numbers are exact and
    a pair outside the table is a ValueError. 0-bit weights cost nothing.
    """
    c = constants
    work = macs(geom, round_up(cin, c.cin_multiple), round_up(cout, c.cout_multiple))
    return c.macs_per_cycle.cycles(work, act_bits, weight_bits, "the target")


def custom_overhead(kept_cout: Quantity, constants: CustomConstants) -> Quantity:
    """The per-layer overhead, paid once by a layer that keeps any output channel."""
    return if_nonzero(kept_cout, constants.overhead_per_layer)


def custom_layer_cycles(
    geom: LayerGeometry,
    counts: dict[int, int],
    cin: int,
    act_bits: int,
    constants: CustomConstants,
) -> float:
    """Exact cycles of a layer with output channels ``{bits: count}`` reading ``cin`` inputs."""
    groups = sum(custom_group_cycles(geom, act_bits, bits, cin, count, constants)
                 for bits, count in counts.items() if bits != 0 and count > 0)
    kept = sum(count for bits, count in counts.items() if bits != 0)
    return float(custom_overhead(kept, constants) + groups)


def custom_energy(cycles: Quantity, constants: CustomConstants) -> Quantity:
    """Joules of ``cycles``; the target must give ``energy_per_cycle``."""
    if constants.energy_per_cycle is None:
        raise ValueError("the target gives no energy_per_cycle")
    return cycles * constants.energy_per_cycle


def custom_precision_problems(name: str, geom: LayerGeometry, act_bits: int,
                              weight_bits: list[int], constants: CustomConstants) -> list[str]:
    """Why the target ``name`` cannot run these precisions (empty when it can)."""
    return constants.macs_per_cycle.problems(name, act_bits, weight_bits)


class CustomLatency(CostModel):
    """A YAML target's latency (cycles): per-group MACs over the table, plus the overhead."""

    def __init__(self, name: str, constants: CustomConstants) -> None:
        self.name = name
        self.constants = constants
        self.act_bits = tuple(constants.macs_per_cycle.act_bits())

    def group_costs(self, geom: LayerGeometry, p_in: Tensor, p_w: Tensor, cin: Tensor,
                    cout: Tensor) -> Tensor:
        return custom_group_cycles(geom, p_in, p_w, cin, cout, self.constants)

    def layer_term(self, geom: LayerGeometry, cin: Tensor, kept_cout: Tensor) -> Tensor:
        return custom_overhead(kept_cout, self.constants)

    def exact_layer_cost(self, geom: LayerGeometry, counts: dict[int, int], cin: int,
                         act_bits: int) -> float:
        return custom_layer_cycles(geom, counts, cin, act_bits, self.constants)

    def precision_problems(self, geom: LayerGeometry, act_bits: int,
                           weight_bits: list[int]) -> list[str]:
        return custom_precision_problems(self.name.removesuffix("_energy"), geom, act_bits,
                                         weight_bits, self.constants)


class CustomEnergy(CustomLatency):
    """A YAML target's energy (joules): its latency times ``energy_per_cycle``."""

    def group_costs(self, geom: LayerGeometry, p_in: Tensor, p_w: Tensor, cin: Tensor,
                    cout: Tensor) -> Tensor:
        return custom_energy(super().group_costs(geom, p_in, p_w, cin, cout), self.constants)

    def layer_term(self, geom: LayerGeometry, cin: Tensor, kept_cout: Tensor) -> Tensor:
        return custom_energy(super().layer_term(geom, cin, kept_cout), self.constants)

    def exact_layer_cost(self, geom: LayerGeometry, counts: dict[int, int], cin: int,
                         act_bits: int) -> float:
        return custom_energy(super().exact_layer_cost(geom, counts, cin, act_bits),
                             self.constants)
