"""MPIC, a mixed-precision RISC-V core (Ottavi et al., arXiv 2010.04073): latency and energy.

Latency is a layer's MACs divided by the core's MACs per cycle for the (activation bits,
weight bits) pair, a look-up table; each weight-precision group of a per-channel layer runs
its own share of the MACs. Energy is the latency at the core's clock times its mean power.
Constants: ``configs/targets/mpic.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from mpsctl.cost.base import CostModel, LayerGeometry
from mpsctl.targets.common import Quantity, macs
from mpsctl.targets.constants import Fields, MacsPerCycle, load_target_constants

#: The published table (MACs per cycle), by activation bits then weight bits.
MPIC_TABLE = MacsPerCycle((
    (2, 2, 6.5), (2, 4, 4.0), (2, 8, 2.2),
    (4, 2, 3.9), (4, 4, 3.5), (4, 8, 2.1),
    (8, 2, 2.5), (8, 4, 2.3), (8, 8, 2.1),
))


@dataclass(frozen=True)
class MPICConstants:
    """MPIC's look-up table, clock and mean power; see ``configs/targets/mpic.yaml``."""

    macs_per_cycle: MacsPerCycle = field(default=MPIC_TABLE)
    frequency_hz: float = 250e6
    #: The mean of the four measured powers 5.30, 5.39, 5.46 and 5.38 mW.
    power_w: float = 5.3825e-3

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str) -> MPICConstants:
        f = Fields(data, source, "MPIC", ("macs_per_cycle", "frequency_hz", "power_w"))
        return cls(f.table("macs_per_cycle", MPIC_TABLE), f.number("frequency_hz", 250e6),
                   f.number("power_w", 5.3825e-3))


def load_mpic_constants(path: str | Path | None = None) -> MPICConstants:
    """Constants from ``path`` (default: the shipped file; built-in values without it)."""
    return load_target_constants(MPICConstants, "mpic", "MPIC", path)


def mpic_cycles(
    geom: LayerGeometry,
    act_bits: Quantity,
    weight_bits: Quantity,
    cin: Quantity,
    cout: Quantity,
    constants: MPICConstants,
) -> Quantity:
    """Cycles of ``cout`` output channels at ``weight_bits`` reading ``act_bits`` inputs.

    Tensors broadcast (the search; NaN for a pair outside the table); numbers give the exact
    value and a ValueError for such a pair. 0-bit weights cost nothing.
    """
    return constants.macs_per_cycle.cycles(macs(geom, cin, cout), act_bits, weight_bits,
                                           "MPIC")


def mpic_layer_cycles(
    geom: LayerGeometry,
    counts: dict[int, int],
    cin: int,
    act_bits: int,
    constants: MPICConstants,
) -> float:
    """Exact cycles of a layer whose output channels form precision groups ``{bits: count}``."""
    return float(sum(mpic_cycles(geom, act_bits, bits, cin, count, constants)
                     for bits, count in counts.items() if bits != 0 and count > 0))


def mpic_energy(cycles: Quantity, constants: MPICConstants) -> Quantity:
    """Joules spent in ``cycles`` at the core's clock and mean power."""
    return cycles / constants.frequency_hz * constants.power_w


def mpic_precision_problems(geom: LayerGeometry, act_bits: int, weight_bits: list[int],
                            constants: MPICConstants) -> list[str]:
    """Why MPIC cannot run a layer reading ``act_bits`` inputs with these weight precisions
    (empty when it can): every (activation, weight) pair must be in the table."""
    return constants.macs_per_cycle.problems("MPIC", act_bits, weight_bits)


class MPICLatency(CostModel):
    """``mpic_latency``: cycles; each weight-precision group runs its share of the MACs."""

    name = "mpic_latency"

    def __init__(self, constants: MPICConstants | None = None) -> None:
        self.constants = constants if constants is not None else MPICConstants()
        self.act_bits = tuple(self.constants.macs_per_cycle.act_bits())

    def group_costs(self, geom: LayerGeometry, p_in: Tensor, p_w: Tensor, cin: Tensor,
                    cout: Tensor) -> Tensor:
        return mpic_cycles(geom, p_in, p_w, cin, cout, self.constants)

    def exact_layer_cost(self, geom: LayerGeometry, counts: dict[int, int], cin: int,
                         act_bits: int) -> float:
        return mpic_layer_cycles(geom, counts, cin, act_bits, self.constants)

    def precision_problems(self, geom: LayerGeometry, act_bits: int,
                           weight_bits: list[int]) -> list[str]:
        return mpic_precision_problems(geom, act_bits, weight_bits, self.constants)


class MPICEnergy(MPICLatency):
    """``mpic_energy``: joules, the latency at the core's clock and mean power."""

    name = "mpic_energy"

    def group_costs(self, geom: LayerGeometry, p_in: Tensor, p_w: Tensor, cin: Tensor,
                    cout: Tensor) -> Tensor:
        return mpic_energy(super().group_costs(geom, p_in, p_w, cin, cout), self.constants)

    def exact_layer_cost(self, geom: LayerGeometry, counts: dict[int, int], cin: int,
                         act_bits: int) -> float:
        return mpic_energy(super().exact_layer_cost(geom, counts, cin, act_bits),
                           self.constants)


def build_mpic_latency(constants_path: str | Path | None = None) -> MPICLatency:
    return MPICLatency(load_mpic_constants(constants_path))


def build_mpic_energy(constants_path: str | Path | None = None) -> MPICEnergy:
    return MPICEnergy(load_mpic_constants(constants_path))
