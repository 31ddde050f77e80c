"""Every cost model by name: the hardware-agnostic metrics and each hardware target.

An entry is a factory ``(constants_path) -> CostModel``; a target with constants (NE16's
cycle counts, say) reads them in its factory, so each call gives an independent instance.
Built-in entries are listed here, in one place; plugins add theirs with
:func:`register_cost_model`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mpsctl.cost.base import CostModel, FunctionCostModel, LayerCostFn
from mpsctl.cost.bitops import bitops_model
from mpsctl.cost.params_bit import params_bit_model
from mpsctl.registry import Registry
from mpsctl.targets.ne16 import build_ne16

CostModelFactory = Callable[[Path | None], CostModel]

COST_MODELS: Registry[CostModelFactory] = Registry("cost model")


def register_cost_model(name: str) -> Callable[[CostModelFactory], CostModelFactory]:
    """Decorator that makes a cost-model factory available to recipes under ``name``."""
    return COST_MODELS.register(name)


def register_cost(name: str) -> Callable[[LayerCostFn], LayerCostFn]:
    """Decorator for a cost that is one :data:`~mpsctl.cost.base.LayerCostFn` (no constants)."""

    def decorate(fn: LayerCostFn) -> LayerCostFn:
        register_cost_model(name)(_agnostic(name, lambda: FunctionCostModel(name, fn)))
        return fn

    return decorate


def build_cost_model(name: str, constants_path: str | Path | None = None) -> CostModel:
    """A new instance of the cost model ``name`` (``constants_path``: the target's constants
    file, None for its shipped ones). ``KeyError`` with the close matches for unknown names."""
    path = Path(constants_path) if constants_path is not None else None
    return COST_MODELS.get(name)(path)


def available_cost_models() -> list[str]:
    return COST_MODELS.names()


def _agnostic(name: str, make: Callable[[], CostModel]) -> CostModelFactory:
    """A factory for a cost model that has no constants file."""

    def factory(constants_path: Path | None = None) -> CostModel:
        if constants_path is not None:
            raise ValueError(f"cost model {name!r} takes no constants file")
        return make()

    return factory


register_cost_model("params_bit")(_agnostic("params_bit", params_bit_model))
register_cost_model("bitops")(_agnostic("bitops", bitops_model))
register_cost_model("ne16")(build_ne16)
