"""What a cost model sees of a layer, and the registry cost models join by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from mpsctl.registry import Registry

#: A cost model evaluates ``f(p_in, p_w, cin, cout)`` for every pair of candidate input
#: precision ``p_in`` (shape ``(n_in, 1)``) and weight precision ``p_w`` (shape ``(1, n_w)``),
#: with ``cin`` the (possibly fractional) effective input channel count (a scalar, or shape
#: ``(1, n_w)`` where it differs per group: see ``cost.expected``) and ``cout`` the output
#: channels of each weight-precision group (a scalar or shape ``(1, n_w)``).
#: It returns a tensor broadcastable to ``(n_in, n_w)``.
LayerCostFn = Callable[["LayerGeometry", Tensor, Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class LayerGeometry:
    """Static shape of one convolution or linear layer.

    ``kind`` is ``"conv"`` (groups may be > 1), ``"depthwise"`` (groups == cin == cout)
    or ``"linear"``. Conv1d layers use ``kernel = (k, 1)`` and ``out_hw = (length, 1)``;
    linear layers use ``kernel = (1, 1)`` and ``out_hw = (1, 1)``.
    """

    kind: str
    cin: int
    cout: int
    kernel: tuple[int, int] = (1, 1)
    out_hw: tuple[int, int] = (1, 1)
    groups: int = 1

    @property
    def k(self) -> int:
        return self.kernel[0] * self.kernel[1]

    @property
    def out_pixels(self) -> int:
        return self.out_hw[0] * self.out_hw[1]


COSTS: Registry[LayerCostFn] = Registry("cost model")


def register_cost(name: str) -> Callable[[LayerCostFn], LayerCostFn]:
    """Decorator that makes a layer cost function available to recipes under ``name``."""
    return COSTS.register(name)


def get_cost(name: str) -> LayerCostFn:
    _load_builtin_costs()
    return COSTS.get(name)


def available_costs() -> list[str]:
    _load_builtin_costs()
    return COSTS.names()


def _load_builtin_costs() -> None:
    from mpsctl.cost import bitops, ne16, params_bit  # noqa: F401  (registration side effect)
