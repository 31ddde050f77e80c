"""What every stage checkpoint holds, and how a runnable model is rebuilt from one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mpsctl.checkpoint.format import load_checkpoint, save_checkpoint
from mpsctl.errors import CheckpointError
from mpsctl.recipe import Recipe, recipe_from_dict, recipe_to_dict
from mpsctl.recipe.build import float_model, supernet_for
from mpsctl.search.supernet import Supernet


def payload(
    stage: str,
    recipe: Recipe,
    model: Supernet,
    input_shape: tuple[int, ...],
    **extra: Any,
) -> dict[str, Any]:
    """The checkpoint contract: stage, resolved recipe, model and architecture state,
    assignment (per layer / per channel), kept channels, plus stage-specific ``extra``
    (metrics, history, cost, optimizer and RNG state)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {
        "stage": stage,
        "recipe": recipe_to_dict(recipe),
        "input_shape": list(input_shape),
        "model_state": state,
        "assignment": {k: v.cpu() for k, v in model.assignment().items()},
        "kept_channels": model.kept_channels(),
        "frozen": all(c.is_fixed for _, c in model.choices()),
        "sliced": stage in ("export", "finetune"),
        **extra,
    }


def extend_lineage(
    ckpt: dict[str, Any], stage: str, metrics: dict[str, Any], cost: dict[str, float]
) -> list[dict[str, Any]]:
    """The pipeline so far (fp32 → search → … ) plus this stage's accuracies and size."""
    return [*ckpt.get("lineage", []), {
        "stage": stage,
        "accuracy": metrics.get("accuracy"),
        "test_accuracy": metrics.get("test_accuracy"),
        "params_bit": cost.get("params_bit"),
    }]


def ensure_writable(folder: Path) -> None:
    """Fail before any training when the run folder cannot hold checkpoints."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as exc:
        raise CheckpointError(
            f"output folder {folder} is not writable ({exc.strerror or exc}); set output_dir "
            "to a folder you can write"
        ) from None


def write(path: Path, data: dict[str, Any]) -> Path:
    """Save a checkpoint (rank 0 only under torchrun)."""
    from mpsctl.training import distributed

    if not distributed.is_main():
        return Path(path)
    return save_checkpoint(path, data)


def read(path: str | Path, command: str = "", allow_partial: bool = False) -> dict:
    """A checkpoint, checked against the stages ``command`` accepts (``STAGE_NEEDS``; any
    stage without a command); a warm-up `last.pt` (no supernet yet) only for resuming."""
    ckpt = load_checkpoint(path, command=command)
    if ckpt.get("phase") == "warmup" and not allow_partial:
        raise CheckpointError(
            f"{path} was saved during the fp32 warm-up and holds no supernet yet; continue it "
            "with `mpsctl search RECIPE --resume`"
        )
    return ckpt


def rebuild(ckpt: dict[str, Any]) -> tuple[Recipe, Supernet]:
    """The recipe and the model of a checkpoint, with its saved state loaded (eval mode)."""
    recipe = recipe_from_dict(ckpt["recipe"])
    shape = tuple(ckpt["input_shape"])
    net = supernet_for(recipe, float_model(recipe, load_weights=False), shape)
    assignment = ckpt["assignment"]
    if ckpt.get("sliced"):
        net = net.harden(assignment)
    elif ckpt.get("frozen"):
        for name, choice in net.choices():
            choice.freeze(assignment[name])
    mine = net.state_dict()
    saved = ckpt["model_state"]
    missing = [k for k in mine if k not in saved]
    unexpected = [k for k in saved if k not in mine]
    shapes = [k for k in mine if k in saved and tuple(mine[k].shape) != tuple(saved[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{what}: {', '.join(keys[:3])}" for what, keys in (
            ("missing", missing), ("unexpected", unexpected), ("shape differs", shapes)) if keys]
        raise CheckpointError(
            f"checkpoint state does not fit the model its recipe builds ({'; '.join(parts)}); "
            "was it written by another mpsctl version or was the model's code changed?"
        )
    net.load_state_dict(saved)
    return recipe, net.eval()


def load_model(path: str | Path) -> Supernet:
    """``mpsctl.load``: the runnable model of any stage checkpoint, in eval mode."""
    _, net = rebuild(read(path))
    return net
