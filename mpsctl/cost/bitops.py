"""Bit-operations: every multiply-accumulate weighted by ``p_w · p_in``."""

from __future__ import annotations

from torch import Tensor

from mpsctl.cost.base import FunctionCostModel, LayerGeometry
from mpsctl.cost.params_bit import weight_count


def bitops(geom: LayerGeometry, p_in: Tensor, p_w: Tensor, cin: Tensor, cout: Tensor) -> Tensor:
    return weight_count(geom, cin, cout) * geom.out_pixels * p_w * p_in


def bitops_model() -> FunctionCostModel:
    return FunctionCostModel("bitops", bitops)
