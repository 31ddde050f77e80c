"""Model size in bits: ``K·(Cin/g)·Cout·p_w`` (depthwise ``K·Cout·p_w``, Linear ``in·out·p_w``)."""

from __future__ import annotations

from torch import Tensor

from mpsctl.cost.base import FunctionCostModel, LayerGeometry, LayerKind


def weight_count(geom: LayerGeometry, cin: Tensor, cout: Tensor) -> Tensor:
    """Number of weights of the layer with ``cin`` input and ``cout`` output channels."""
    if geom.kind == LayerKind.DEPTHWISE:
        return geom.k * cout
    return geom.k * (cin / geom.groups) * cout


def params_bit(geom: LayerGeometry, p_in: Tensor, p_w: Tensor, cin: Tensor, cout: Tensor) -> Tensor:
    return weight_count(geom, cin, cout) * p_w


def params_bit_model() -> FunctionCostModel:
    return FunctionCostModel("params_bit", params_bit)
