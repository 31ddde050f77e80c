"""Differentiable cost models (params_bit, bitops, ne16) and their registry."""

from mpsctl.cost.base import LayerGeometry, available_costs, get_cost, register_cost

__all__ = ["LayerGeometry", "available_costs", "get_cost", "register_cost"]
