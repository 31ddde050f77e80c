"""`mpsctl export`: argmax (or refined) choices → fixed-precision model, 0-bit channels removed.

Before anything is written, the exported model's output must equal the supernet's eval
output on a validation batch (docs/algorithm.md#export). The check runs in float64 so that
the summation order of a smaller convolution cannot flip a quantization code; the float32
difference is reported beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mpsctl.checkpoint import state
from mpsctl.console import Reporter
from mpsctl.recipe import build
from mpsctl.search.supernet import Supernet
from mpsctl.stages import budgets, common, summary
from mpsctl.training.epoch import evaluate

RELATIVE_TOLERANCE = 1e-5


class ExportMismatchError(RuntimeError):
    """The exported model does not compute what the supernet computes: a bug, not bad input."""


def output_difference(net: Supernet, fixed: Supernet, x: torch.Tensor) -> dict[str, float]:
    """Max |supernet − exported| on ``x`` in float64 and float32, the output's scale and its
    spread over the batch (0: a constant output, which any exported model would match).

    Runs in the default memory layout: float64 convolutions have no fast channels-last
    kernels (a depthwise one ran 5× slower in that layout).
    """
    x = x.contiguous()
    layouts = [any(layer.channels_last for _, layer in m.layers()) for m in (net, fixed)]
    net, fixed = net.eval(), fixed.eval()
    try:
        for m in (net, fixed):
            m.set_channels_last(False)
        with torch.no_grad():
            y32 = net(x)
            d32 = (y32 - fixed(x)).abs().max().item()
            ref = net.double()(x.double())
            d64 = (ref - fixed.double()(x.double())).abs().max().item()
    finally:
        for m, layout in zip((net, fixed), layouts, strict=True):
            m.float()
            m.set_channels_last(layout)
    return {"max_abs_diff": d64, "max_abs_diff_float32": d32,
            "output_scale": ref.abs().max().item(),
            "output_spread": (ref - ref[:1]).abs().max().item()}


def _accuracy(ckpt: dict[str, Any], fixed: Supernet, loaders) -> dict[str, Any]:
    """Validation (and test) metrics of the exported model. After a search they are the
    search's last argmax metrics (the outputs were just shown equal), so export does not
    re-run the data; a refined assignment is new and is evaluated."""
    searched = ckpt.get("metrics", {})
    if ckpt["stage"] == "search" and "accuracy" in searched and "val_loss" in searched:
        test = {k: searched[k] for k in ("test_accuracy", "test_loss") if k in searched}
        return {"accuracy": searched["accuracy"], "loss": searched["val_loss"], **test,
                "from": "search (argmax model, identical outputs)"}
    cpu = torch.device("cpu")
    return {**evaluate(fixed, loaders.val, cpu), **common.test_metrics(fixed, loaders.test, cpu)}


def run_export(path: Path, reporter: Reporter) -> dict[str, Any]:
    ckpt = state.read(path, command="export")
    recipe, net = state.rebuild(ckpt)
    fixed = net.harden()
    bundle = build.datasets(recipe)
    loaders = build.loaders(recipe, bundle)
    batch = common.first_batch(loaders.val)
    check = output_difference(net, fixed, batch)
    if check["max_abs_diff"] > RELATIVE_TOLERANCE * max(check["output_scale"], 1.0):
        raise ExportMismatchError(
            f"exported model differs from the supernet by {check['max_abs_diff']:.3g} "
            "(this is a bug in mpsctl; please report it with the checkpoint)"
        )
    reporter.log(f"export check: max |supernet − exported| = {check['max_abs_diff']:.3g} "
                 f"(float64), {check['max_abs_diff_float32']:.3g} (float32)")
    warning = summary.constant_output_warning(net, batch, check["output_spread"])
    if warning:
        reporter.log(f"warning: {warning}")
    metrics = _accuracy(ckpt, fixed, loaders)
    names = summary.cost_names(recipe.search.objective_costs(), fixed)
    cost = summary.costs(fixed, names, hard=True)
    data = state.payload("export", recipe, fixed, bundle.input_shape,
                         metrics=metrics, cost=cost, check=check,
                         history=ckpt.get("history", []),
                         search_metrics=ckpt.get("metrics", {}),
                         lineage=state.extend_lineage(ckpt, "export", metrics, cost),
                         budgets=ckpt.get("budgets", {}))
    out = state.write(Path(path).parent / "export.pt", data)
    return {"checkpoint": str(out), "metrics": metrics, "cost": cost, "check": check,
            **({"warnings": [warning]} if warning else {}),
            "layers": summary.layer_rows(fixed),
            "layer_costs": summary.per_layer_costs(fixed, names),
            "budget": budgets.slack(cost, ckpt.get("budgets", {}))}


def run_export_command(
    path: Path, reporter: Reporter, onnx: str | None = None, variant: str = "integer"
) -> dict[str, Any]:
    """`mpsctl export [--onnx FILE]`: export a search/refine checkpoint, and/or write the
    verified integer ONNX graph of an exported (or fine-tuned) model."""
    if onnx:
        from mpsctl.deploy.export import check_variant

        check_variant(variant)  # before a search checkpoint is exported
    stage = state.read(path)["stage"] if onnx else None
    if onnx and stage in ("export", "finetune"):
        result = run_onnx_export(Path(path), Path(onnx), variant)
        reporter.log(_onnx_line(result))
        return {"checkpoint": str(path), **result}
    result = run_export(path, reporter)
    if onnx:
        result["onnx"] = run_onnx_export(Path(result["checkpoint"]), Path(onnx), variant)
        reporter.log(_onnx_line(result["onnx"]))
    return result


def run_onnx_export(checkpoint: Path, out: Path, variant: str = "integer",
                    samples: int = 512) -> dict[str, Any]:
    """`mpsctl export --onnx`: load an export/finetune checkpoint, export it, check it on up to
    ``samples`` validation samples."""
    from mpsctl.deploy import export_onnx

    ckpt = state.read(checkpoint, command="export --onnx")
    recipe, net = state.rebuild(ckpt)
    _, loader = common.val_loader(recipe)
    xs, ys, seen = [], [], 0
    for x, y in loader:
        xs.append(x)
        ys.append(y)
        seen += x.shape[0]
        if seen >= samples:
            break
    batch, labels = torch.cat(xs)[:samples], torch.cat(ys)[:samples]
    result = export_onnx(net, batch, Path(out), variant, labels=labels)
    return {"source": str(checkpoint), "stage": ckpt["stage"], **result}


def _onnx_line(result: dict[str, Any]) -> str:
    line = (f"ONNX ({result['variant']}) written to {result['onnx']}: top-1 agreement "
            f"{result['top1_agreement']:.4f}, max error {result['max_error_lsb']:g} LSB "
            f"(drift {result['drift_max_lsb']:g} LSB)")
    if "warning" in result:
        line += f"\nwarning: {result['warning']}"
    return line
