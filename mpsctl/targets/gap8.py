"""GAP8 (8-core RISC-V cluster with 8-bit SIMD): a latency model that ignores bit widths.

Channels are processed in groups (``⌈n/N⌉``: straight-through in the search, exact on
integers), so the model rewards pruning only: a layer's latency depends on its kept input
and output channels, whatever their precisions. Constants: ``configs/targets/gap8.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mpsctl.cost.base import CostModel, LayerGeometry, LayerKind
from mpsctl.cost.rounding import cdiv
from mpsctl.targets.common import Quantity, if_nonzero
from mpsctl.targets.constants import Fields, load_target_constants


@dataclass(frozen=True)
class GAP8Constants:
    """Tile sizes and cycle counts of the GAP8 kernels; see ``configs/targets/gap8.yaml``."""

    out_rows_tile: int = 2
    out_cols_tile: int = 8
    im2col_per_element: int = 2
    cout_tile: int = 4
    matmul_prologue: int = 5
    inner_tile: int = 4
    inner_cycles: int = 14
    matmul_epilogue: int = 10
    depthwise_cycles: int = 4
    depthwise_cout_tile: int = 4
    linear_in_tile: int = 2
    linear_out_tile: int = 4

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str) -> GAP8Constants:
        defaults = cls()
        names = tuple(defaults.__dataclass_fields__)
        f = Fields(data, source, "GAP8", names)
        tiles = {"out_rows_tile", "out_cols_tile", "cout_tile", "inner_tile",
                 "depthwise_cout_tile", "linear_in_tile", "linear_out_tile"}
        return cls(**{n: f.integer(n, getattr(defaults, n), 1 if n in tiles else 0)
                      for n in names})


def load_gap8_constants(path: str | Path | None = None) -> GAP8Constants:
    """Constants from ``path`` (default: the shipped file; built-in values without it)."""
    return load_target_constants(GAP8Constants, "gap8", "GAP8", path)


def gap8_cycles(geom: LayerGeometry, cin: Quantity, cout: Quantity,
                constants: GAP8Constants) -> Quantity:
    """Cycles of the layer with ``cin`` kept inputs and ``cout`` kept outputs (0 if none).

    Conv2d: ``⌈Ho/2⌉·⌈Wo/8⌉·(im2col + matmul)``, ``im2col = K·Cin·2``, ``matmul =
    ⌈Cout/4⌉·(5 + ⌈K·Cin/4⌉·14 + 10)``; depthwise: ``4·⌈Cout/4⌉·Ho·Wo·K``; Linear:
    ``⌈in/2⌉·⌈out/4⌉``. A Conv1d is a Conv2d of width 1; a grouped (not depthwise) conv
    counts as ``groups`` convs of ``⌈Cin/groups⌉ → ⌈Cout/groups⌉``.
    """
    c = constants
    ho, wo = geom.out_hw
    if geom.kind == LayerKind.LINEAR:
        cycles = cdiv(cin, c.linear_in_tile) * cdiv(cout, c.linear_out_tile)
    elif geom.kind == LayerKind.DEPTHWISE:
        cycles = c.depthwise_cycles * cdiv(cout, c.depthwise_cout_tile) * ho * wo * geom.k
    else:
        g = geom.groups
        ki, ko = (cdiv(cin, g), cdiv(cout, g)) if g > 1 else (cin, cout)
        im2col = geom.k * ki * c.im2col_per_element
        inner = cdiv(geom.k * ki, c.inner_tile) * c.inner_cycles
        matmul = cdiv(ko, c.cout_tile) * (c.matmul_prologue + inner + c.matmul_epilogue)
        spatial = cdiv(ho, c.out_rows_tile) * cdiv(wo, c.out_cols_tile)
        cycles = g * spatial * (im2col + matmul)
    return if_nonzero(cout, cycles)


def gap8_precision_problems(geom: LayerGeometry, act_bits: int,
                            weight_bits: list[int]) -> list[str]:
    """Why GAP8 cannot run these precisions (empty when it can): its SIMD unit is 8-bit, so
    anything up to 8 bits runs (at the 8-bit speed) and wider precisions do not."""
    found = []
    if act_bits > 8:
        found.append(f"GAP8 runs activations of up to 8 bits, not {act_bits}")
    found += [f"GAP8 runs weights of up to 8 bits, not {w}" for w in weight_bits if w > 8]
    return found


class GAP8Latency(CostModel):
    """``gap8_latency``: cycles of the layer's kept channels, whatever their precisions.

    Nothing depends on a weight-precision group, so the whole latency is the layer's
    once-per-layer cost of its kept channels (``layer_term``).
    """

    name = "gap8_latency"

    def __init__(self, constants: GAP8Constants | None = None) -> None:
        self.constants = constants if constants is not None else GAP8Constants()

    def group_costs(self, geom: LayerGeometry, p_in: Tensor, p_w: Tensor, cin: Tensor,
                    cout: Tensor) -> Tensor:
        return torch.zeros_like(p_w, dtype=torch.float32)

    def layer_term(self, geom: LayerGeometry, cin: Tensor, kept_cout: Tensor) -> Tensor:
        return gap8_cycles(geom, cin, kept_cout, self.constants)

    def exact_layer_cost(self, geom: LayerGeometry, counts: dict[int, int], cin: int,
                         act_bits: int) -> int:
        kept = sum(n for bits, n in counts.items() if bits != 0)
        return int(gap8_cycles(geom, cin, kept, self.constants))

    def precision_problems(self, geom: LayerGeometry, act_bits: int,
                           weight_bits: list[int]) -> list[str]:
        return gap8_precision_problems(geom, act_bits, weight_bits)


def build_gap8_latency(constants_path: str | Path | None = None) -> GAP8Latency:
    return GAP8Latency(load_gap8_constants(constants_path))
