"""Hardware-agnostic costs (``params_bit``, ``bitops``), the cost-model interface
(``base``) and the straight-through integer helpers targets share (``rounding``).

Hardware targets and the registry of every cost model by name live in :mod:`mpsctl.targets`.
"""

from mpsctl.cost.base import (
    CostModel,
    FunctionCostModel,
    LayerCostFn,
    LayerGeometry,
    LayerKind,
)

__all__ = ["CostModel", "FunctionCostModel", "LayerCostFn", "LayerGeometry", "LayerKind"]
