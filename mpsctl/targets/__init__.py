"""Hardware targets: each target's cost model, its constants and which layers it runs
(``ne16``), the channel-promotion refinement that tiles make worthwhile (``refine``), and the
registry of every cost model by name (``registry``)."""

from mpsctl.targets.registry import (
    COST_MODELS,
    available_cost_models,
    build_cost_model,
    register_cost,
    register_cost_model,
)

__all__ = [
    "COST_MODELS",
    "available_cost_models",
    "build_cost_model",
    "register_cost",
    "register_cost_model",
]
