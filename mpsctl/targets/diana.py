"""DIANA (IGSC 2022): an 8-bit digital accelerator and a ternary analog in-memory array.

A layer's 8-bit channels run on the digital accelerator and its 2-bit ("ternary") channels
on the analog array; the two run concurrently, so the layer takes ``max(digital, analog)``.
(The reference implementation sums the two; mpsctl takes the maximum, exact on hard
assignments and a smooth log-sum-exp maximum in the soft search, see ``smooth_max``.)
Activations are 8-bit. Constants: ``configs/targets/diana.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mpsctl.cost.base import CostModel, LayerGeometry, LayerKind
from mpsctl.cost.rounding import cdiv
from mpsctl.errors import UserError
from mpsctl.targets.common import Quantity, if_nonzero, smooth_max
from mpsctl.targets.constants import Fields, load_target_constants


@dataclass(frozen=True)
class DianaConstants:
    """Array sizes, cycle counts and clock of DIANA; see ``configs/targets/diana.yaml``."""

    digital_bits: int = 8
    analog_bits: int = 2
    digital_array: int = 16
    load_store_divisor: int = 8
    analog_program_per_weight: int = 8
    analog_cout_tile: int = 512
    analog_cin_tile: int = 128
    unroll_buffer: int = 1152
    unroll_min_cin: int = 64
    max_unroll: int = 8
    analog_op_ns: float = 70.0
    frequency_hz: float = 260e6
    smooth_max_temperature: float = 0.05

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str) -> DianaConstants:
        defaults = cls()
        names = tuple(defaults.__dataclass_fields__)
        f = Fields(data, source, "DIANA", names)
        values: dict[str, Any] = {}
        for n in names:
            default = getattr(defaults, n)
            if isinstance(default, float):
                values[n] = f.number(n, default, positive=n != "smooth_max_temperature")
            else:
                values[n] = f.integer(n, default, 1)
        constants = cls(**values)
        if constants.digital_bits == constants.analog_bits:
            raise UserError(f"{source}: DIANA digital_bits and analog_bits must differ")
        if constants.max_unroll & (constants.max_unroll - 1):
            raise f.fail("max_unroll", "a power of two", constants.max_unroll)
        return constants

    @property
    def analog_op_cycles(self) -> float:
        """Cycles (at ``frequency_hz``) of one analog array operation of ``analog_op_ns``."""
        return self.analog_op_ns / (1e9 / self.frequency_hz)

    @property
    def unrolls(self) -> tuple[int, ...]:
        """The output unrolls tried, smallest first: 1, 2, 4, ... ``max_unroll``."""
        out, u = [], 1
        while u <= self.max_unroll:
            out.append(u)
            u *= 2
        return tuple(out)


def load_diana_constants(path: str | Path | None = None) -> DianaConstants:
    """Constants from ``path`` (default: the shipped file; built-in values without it)."""
    return load_target_constants(DianaConstants, "diana", "DIANA", path)


def diana_digital_cycles(geom: LayerGeometry, cin: Quantity, cout: Quantity,
                         constants: DianaConstants) -> Quantity:
    """Cycles of ``cout`` output channels on the 16×16 digital array (0 if ``cout`` is 0).

    ``⌈(Cout/g)/16⌉·Cin·⌈Ho/16⌉·Wo·Kh·Kw + Ho·Wo·(Cout + Cin)/8``; a depthwise layer's
    channels are its ``cout`` (``g = Cin = Cout``); Linear is a 1×1 conv on a 1×1 map.
    """
    c = constants
    kernel, (ho, wo) = geom.k, geom.out_hw
    if geom.kind == LayerKind.DEPTHWISE:
        cin = cout
        per_group: Quantity = 1
    elif geom.kind == LayerKind.CONV and geom.groups > 1:
        per_group = cdiv(cout / geom.groups, c.digital_array)
    else:
        per_group = cdiv(cout, c.digital_array)
    compute = per_group * cin * cdiv(ho, c.digital_array) * wo * kernel
    load_store = ho * wo * (cout + cin) / c.load_store_divisor
    return if_nonzero(cout, compute + load_store)


def diana_unroll(geom: LayerGeometry, cin: Quantity, cout: Quantity,
                 constants: DianaConstants) -> Quantity:
    """The analog array's output unroll: the largest ``u`` in 1, 2, 4, 8 with
    ``u·Cout ≤ 512`` and ``(u + Kh − 1)·max(64, Cin)·Kw ≤ 1152``; 1 when none fits."""
    c = constants
    kh, kw = geom.kernel
    tensor = isinstance(cin, Tensor) or isinstance(cout, Tensor)
    if tensor:
        ref = cout if isinstance(cout, Tensor) else cin
        cin_t = torch.as_tensor(cin, device=ref.device, dtype=torch.float32).detach()
        cout_t = torch.as_tensor(cout, device=ref.device, dtype=torch.float32).detach()
        unroll = torch.ones_like(torch.broadcast_tensors(cin_t, cout_t)[0])
        for u in c.unrolls[1:]:
            fits = (u * cout_t <= c.analog_cout_tile) & (
                (u + kh - 1) * torch.clamp(cin_t, min=c.unroll_min_cin) * kw <= c.unroll_buffer)
            unroll = torch.where(fits, torch.full_like(unroll, u), unroll)
        return unroll
    best = 1
    for u in c.unrolls:
        if (u * cout <= c.analog_cout_tile
                and (u + kh - 1) * max(c.unroll_min_cin, cin) * kw <= c.unroll_buffer):
            best = u
    return best


def diana_analog_cycles(geom: LayerGeometry, cin: Quantity, cout: Quantity,
                        constants: DianaConstants) -> Quantity:
    """Cycles of ``cout`` ternary output channels on the analog array (0 if ``cout`` is 0).

    Weight programming ``4·2·Cin·Kh·Kw`` plus compute ``⌈Cout/512⌉·⌈Cin/128⌉·Ho·Wo/u``
    operations of 70 ns at 260 MHz. The array runs ungrouped layers only: a grouped or
    depthwise layer on it is a ValueError on numbers (the recipe check refuses it earlier).
    """
    c = constants
    if geom.kind == LayerKind.DEPTHWISE or geom.groups > 1:
        if not (isinstance(cin, Tensor) or isinstance(cout, Tensor)):
            raise ValueError(f"DIANA's analog array cannot run a {geom.kind} layer with "
                             f"{geom.groups} groups")
    ho, wo = geom.out_hw
    program = c.analog_program_per_weight * cin * geom.k
    unroll = diana_unroll(geom, cin, cout, c)
    ops = cdiv(cout, c.analog_cout_tile) * cdiv(cin, c.analog_cin_tile) * ho * wo / unroll
    return if_nonzero(cout, program + ops * c.analog_op_cycles)


def diana_group_cycles(geom: LayerGeometry, weight_bits: int, cin: Quantity, cout: Quantity,
                       constants: DianaConstants) -> Quantity:
    """Cycles of one weight-precision group: digital, analog, or 0 for pruned channels."""
    if weight_bits == 0:
        return 0
    if weight_bits == constants.digital_bits:
        return diana_digital_cycles(geom, cin, cout, constants)
    if weight_bits == constants.analog_bits:
        return diana_analog_cycles(geom, cin, cout, constants)
    raise ValueError(f"DIANA runs {constants.analog_bits}- and {constants.digital_bits}-bit "
                     f"weights only, not {weight_bits}")


def diana_layer_cycles(geom: LayerGeometry, counts: dict[int, int], cin: int,
                       constants: DianaConstants) -> float:
    """Exact cycles of a layer with output channels ``{bits: count}``: the slower of its
    digital (8-bit) and analog (2-bit) parts, which run concurrently."""
    parts = [diana_group_cycles(geom, int(bits), cin, int(count), constants)
             for bits, count in counts.items() if count > 0]
    return float(max(parts, default=0))


def diana_precision_problems(geom: LayerGeometry, act_bits: int, weight_bits: list[int],
                             constants: DianaConstants) -> list[str]:
    """Why DIANA cannot run a layer with these precisions (empty when it can): activations
    are 8-bit, weights 8 (digital) or 2 (analog) bits or pruned, and the analog array runs
    ungrouped layers only."""
    c = constants
    found = []
    if act_bits != 8:
        found.append(f"DIANA runs 8-bit activations only, not {act_bits}")
    allowed = (0, c.analog_bits, c.digital_bits)
    for w in weight_bits:
        if w not in allowed:
            found.append(f"DIANA cannot run {w}-bit weights (it runs {c.digital_bits} on the "
                         f"digital accelerator, {c.analog_bits} on the analog array, "
                         "or 0 to prune)")
    depthwise = geom.kind == LayerKind.DEPTHWISE
    if c.analog_bits in weight_bits and (depthwise or geom.groups > 1):
        what = "depthwise" if depthwise else f"grouped ({geom.groups} groups)"
        found.append(f"DIANA's analog array cannot run {c.analog_bits}-bit weights in a "
                     f"{what} layer (use {c.digital_bits} or 0 there)")
    return found


class DianaLatency(CostModel):
    """``diana_latency``: per layer, the slower of the digital and analog parts.

    In a per-channel search the two groups' expected cycles combine through a smooth
    maximum (log-sum-exp, temperature ``smooth_max_temperature`` × the larger part), so both
    sides get gradient near a tie; hard assignments use the exact maximum.
    """

    name = "diana_latency"
    act_bits = (8,)

    def __init__(self, constants: DianaConstants | None = None) -> None:
        self.constants = constants if constants is not None else DianaConstants()

    def group_costs(self, geom: LayerGeometry, p_in: Tensor, p_w: Tensor, cin: Tensor,
                    cout: Tensor) -> Tensor:
        c = self.constants
        cout = torch.broadcast_to(torch.as_tensor(cout, device=p_w.device), p_w.shape)
        digital = diana_digital_cycles(geom, cin, cout, c)
        analog = diana_analog_cycles(geom, cin, cout, c)
        zeros = torch.zeros_like(digital)
        out = torch.where(p_w == c.digital_bits, digital, zeros)
        return torch.where(p_w == c.analog_bits, analog, out)

    def combine_groups(self, per_group: Tensor) -> Tensor:
        return smooth_max(per_group, self.constants.smooth_max_temperature)

    def exact_layer_cost(self, geom: LayerGeometry, counts: dict[int, int], cin: int,
                         act_bits: int) -> float:
        return diana_layer_cycles(geom, counts, cin, self.constants)

    def precision_problems(self, geom: LayerGeometry, act_bits: int,
                           weight_bits: list[int]) -> list[str]:
        return diana_precision_problems(geom, act_bits, weight_bits, self.constants)


def build_diana_latency(constants_path: str | Path | None = None) -> DianaLatency:
    return DianaLatency(load_diana_constants(constants_path))
