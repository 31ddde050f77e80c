"""PNG plots of a report (`mpsctl.stages.evaluate.run_report`): precisions, costs, history.

Drawn with matplotlib's Agg canvas on standalone figures (no pyplot state, no display), so
it works headless and from several threads. Needs the ``deploy`` extra.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from mpsctl.deploy import DEPLOY_EXTRA
from mpsctl.errors import MissingPackageError

PLOTS_MISSING = f"plots need the deploy extra: {DEPLOY_EXTRA}"
_DPI = 100
#: Bar colours per precision (0 = pruned), darker for more bits.
_BIT_COLOURS = {0: "#d9d9d9", 1: "#fde0c5", 2: "#fdae6b", 3: "#fd8d3c", 4: "#e6550d",
                5: "#a6bddb", 6: "#74a9cf", 7: "#3690c0", 8: "#045a8d"}


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingPackageError(PLOTS_MISSING) from None
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _few_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(nbins=4)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, format="png", dpi=_DPI)
    return path


def _height(n_layers: int) -> float:
    return max(3.0, 1.2 + 0.35 * n_layers)


def _weight_bits(layer: dict[str, Any]) -> list[int]:
    bits = layer["w_bits"]
    return list(bits) if isinstance(bits, (list, tuple)) else [int(bits)] * layer.get(
        "out_channels", 1)


def plot_bits(layers: list[dict[str, Any]], path: Path) -> Path:
    """Weight bits (mean over kept channels, min–max whiskers) and input activation bits."""
    names = [layer["name"] for layer in layers]
    fig = _figure(8, _height(len(layers)))
    ax = fig.add_subplot()
    rows = range(len(layers))
    means, low, high = [], [], []
    for layer in layers:
        bits = _weight_bits(layer) or [0]
        mean = sum(bits) / len(bits)
        means.append(mean)
        low.append(mean - min(bits))
        high.append(max(bits) - mean)
    a_bits = [layer["a_bits"] for layer in layers]
    ax.barh([r - 0.2 for r in rows], means, height=0.4, xerr=[low, high], capsize=3,
            color="#3182bd", label="weights (mean per channel)")
    ax.barh([r + 0.2 for r in rows], a_bits, height=0.4, color="#fd8d3c",
            label="input activations")
    ax.set_yticks(list(rows), names)
    ax.invert_yaxis()
    ax.set_xlabel("bits")
    ax.set_title("Precision per layer")
    ax.xaxis.set_major_locator(_integer_ticks())
    fig.legend(loc="outside lower center", ncols=2, fontsize="small")
    return _save(fig, path)


def plot_channel_histogram(layers: list[dict[str, Any]], path: Path) -> Path:
    """Output channels at each weight precision per layer, pruned (0-bit) channels in grey."""
    counts = []
    for layer in layers:
        c = Counter(_weight_bits(layer))
        pruned = layer.get("total_out_channels", layer.get("out_channels", 0)) - layer.get(
            "out_channels", sum(c.values()))
        if pruned > 0:
            c[0] += pruned
        counts.append(c)
    precisions = sorted({b for c in counts for b in c})
    fig = _figure(8, _height(len(layers)))
    ax = fig.add_subplot()
    rows = list(range(len(layers)))
    left = [0] * len(layers)
    for bits in precisions:
        widths = [c.get(bits, 0) for c in counts]
        label = "pruned (0 bit)" if bits == 0 else f"{bits} bit"
        ax.barh(rows, widths, left=left, color=_BIT_COLOURS.get(bits, "#636363"), label=label)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_yticks(rows, [layer["name"] for layer in layers])
    ax.invert_yaxis()
    ax.set_xlabel("output channels")
    ax.set_title("Weight precision of each output channel")
    fig.legend(loc="outside lower center", ncols=len(precisions), fontsize="small")
    return _save(fig, path)


def plot_costs(layer_costs: dict[str, dict[str, float]], path: Path) -> Path:
    """One panel per cost model: each layer's share of the model's cost."""
    names = list(layer_costs)
    models = sorted({m for costs in layer_costs.values() for m in costs})
    fig = _figure(4.5 * max(len(models), 1), _height(len(names)))
    axes = fig.subplots(1, max(len(models), 1), sharey=True, squeeze=False)[0]
    rows = list(range(len(names)))
    for ax, model in zip(axes, models, strict=False):
        values = [layer_costs[n].get(model, 0.0) for n in names]
        total = sum(values)
        ax.barh(rows, values, color="#31a354")
        ax.set_title(f"{model} (total {total:,.4g})", fontsize="medium")
        ax.set_xlabel(model)
        ax.xaxis.set_major_locator(_few_ticks())
        for r, v in zip(rows, values, strict=True):
            if total > 0:
                ax.annotate(f"{v / total:.0%}", (v, r), xytext=(3, 0),
                            textcoords="offset points", va="center", fontsize="x-small")
        ax.margins(x=0.15)
    axes[0].set_yticks(rows, names)
    axes[0].invert_yaxis()
    fig.suptitle("Cost per layer")
    return _save(fig, path)


def plot_history(history: list[dict[str, Any]], path: Path) -> Path:
    """Accuracy (argmax and soft), hard cost (relative to the first epoch) and temperature."""
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    fig = _figure(7, 8)
    acc_ax, cost_ax, temp_ax = fig.subplots(3, 1, sharex=True)
    for key, label in (("accuracy", "argmax model"), ("soft_accuracy", "soft supernet"),
                       ("train_accuracy", "training")):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            acc_ax.plot(epochs, values, marker="o", label=label)
    acc_ax.set_ylabel("accuracy")
    acc_ax.legend(fontsize="small")
    acc_ax.set_title("Search history")
    cost_names = sorted({c for h in history for c in (h.get("cost") or {})})
    for name in cost_names:
        values = [(h.get("cost") or {}).get(name) for h in history]
        first = next((v for v in values if v), None)
        if first:
            rel = [v / first if v is not None else None for v in values]
            cost_ax.plot(epochs, rel, marker="o", label=f"{name} (epoch {epochs[0]}: {first:,.4g})")
    cost_ax.set_ylabel("hard cost / first epoch")
    if cost_names:
        cost_ax.legend(fontsize="small")
    temps = [h.get("temperature") for h in history]
    if any(t is not None for t in temps):
        temp_ax.plot(epochs, temps, marker="o", color="#756bb1")
    temp_ax.set_ylabel("temperature")
    temp_ax.set_xlabel("epoch")
    temp_ax.xaxis.set_major_locator(_integer_ticks())
    return _save(fig, path)


def write_plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write the report's PNGs into ``out_dir`` and return their paths: bits per layer,
    channel precision histogram, cost per layer, and the search history (when there is one)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layers = report.get("layers") or []
    written: list[Path] = []
    if layers:
        written.append(plot_bits(layers, out_dir / "bits_per_layer.png"))
        written.append(plot_channel_histogram(layers, out_dir / "channel_bits.png"))
    if report.get("layer_costs"):
        written.append(plot_costs(report["layer_costs"], out_dir / "cost_per_layer.png"))
    if report.get("history"):
        written.append(plot_history(report["history"], out_dir / "search_history.png"))
    return written


#: Marker and colour of each kind of sweep point.
_SWEEP_STYLE = {"searched": ("o", "#3182bd", "searched (fine-tuned)"),
                "uniform": ("s", "#e6550d", "uniform QAT"),
                "pruned": ("^", "#31a354", "uniform QAT + L1 pruning")}
PARETO_SIZE = (8.0, 5.0)


def plot_pareto(sweep: dict[str, Any], path: Path) -> Path:
    """Accuracy against cost (share of the highest-precision model) of every sweep point,
    one marker per kind; front points ringed, the searched points joined in cost order."""
    cost = sweep["cost"]
    highest = sweep.get("highest") or 1.0
    front = set(sweep.get("front", []))
    fig = _figure(*PARETO_SIZE)
    ax = fig.add_subplot()
    for kind, (marker, colour, label) in _SWEEP_STYLE.items():
        points = sorted((p for p in sweep["points"] if p["kind"] == kind),
                        key=lambda p: p["cost"][cost])
        if not points:
            continue
        xs = [100 * p["cost"][cost] / highest for p in points]
        ys = [100 * p["accuracy"] for p in points]
        ax.plot(xs, ys, marker=marker, color=colour, label=label,
                linestyle="-" if kind == "searched" else "none")
        for p, x, y in zip(points, xs, ys, strict=True):
            if p["id"] in front:
                ax.plot([x], [y], marker="o", markersize=13, markerfacecolor="none",
                        markeredgecolor="#222222", linestyle="none")
    ax.plot([], [], marker="o", markersize=10, markerfacecolor="none",
            markeredgecolor="#222222", linestyle="none", label="Pareto front")
    ax.set_xlabel(f"{cost}, % of the highest-precision model")
    ax.set_ylabel("validation accuracy, %")
    ax.set_title(f"{sweep.get('recipe', '')}: accuracy vs {cost} (seed {sweep.get('seed', '')})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    return _save(fig, path)


def plot_pareto_seeds(summary: dict[str, Any], path: Path) -> Path:
    """The front over several seeds (``mpsctl.stages.seeds.across_seeds``): each point's
    mean accuracy against its mean size, bars from the lowest to the highest seed, front
    points ringed, the searched points joined in size order."""
    on = summary["score_on"]
    fig = _figure(*PARETO_SIZE)
    ax = fig.add_subplot()
    for kind, (marker, colour, label) in _SWEEP_STYLE.items():
        points = [p for p in summary["points"] if p["kind"] == kind]
        if not points:
            continue
        xs = [100 * p["share"]["mean"] for p in points]
        ys = [100 * p[on]["mean"] for p in points]
        below = [y - 100 * p[on]["min"] for y, p in zip(ys, points, strict=True)]
        above = [100 * p[on]["max"] - y for y, p in zip(ys, points, strict=True)]
        ax.errorbar(xs, ys, yerr=[below, above], marker=marker, color=colour, label=label,
                    capsize=3, linestyle="-" if kind == "searched" else "none")
        for p, x, y in zip(points, xs, ys, strict=True):
            if p["front"]:
                ax.plot([x], [y], marker="o", markersize=13, markerfacecolor="none",
                        markeredgecolor="#222222", linestyle="none")
    ax.plot([], [], marker="o", markersize=10, markerfacecolor="none",
            markeredgecolor="#222222", linestyle="none", label="Pareto front (means)")
    ax.set_xscale("log")
    sizes = [100 * p["share"]["mean"] for p in summary["points"]]
    ticks = [t for t in (1, 2, 5, 10, 25, 50, 100) if min(sizes) / 2 <= t <= max(sizes) * 2]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel(f"{summary['cost']}, % of the highest-precision model")
    ax.set_ylabel(f"{'test' if on == 'test_accuracy' else 'validation'} accuracy, %")
    seeds = summary.get("seeds") or summary.get("seeds_found") or []
    ax.set_title(f"{summary.get('recipe', '')}: {len(seeds)} seeds, mean and min-max")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    return _save(fig, path)
