"""Human-readable output of each command: rich tables on stderr."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from mpsctl.console import format_cost
from mpsctl.stages.summary import deployment_lines


def _width(stream) -> int | None:
    """Terminal width on a terminal; wide enough for the tables when piped or logged."""
    return None if stream.isatty() else 140


_console = Console(stderr=True, highlight=False, width=_width(sys.stderr))


def _bits(value: Any) -> str:
    if isinstance(value, list):
        if not value:
            return "-"
        counts: dict[int, int] = {}
        for b in value:
            counts[b] = counts.get(b, 0) + 1
        return " ".join(f"{n}×{b}" for b, n in sorted(counts.items()))
    return str(value)


def layer_table(rows: list[dict], layer_costs: dict[str, dict] | None = None,
                title: str = "layers") -> Table:
    table = Table(title=title)
    for col in ("layer", "type", "w bits", "a bits", "in", "out (kept/total)"):
        table.add_column(col)
    cost_names = sorted({k for v in (layer_costs or {}).values() for k in v})
    for name in cost_names:
        table.add_column(name, justify="right")
    for row in rows:
        cells = [
            row["name"], row["type"], _bits(row["w_bits"]), _bits(row["a_bits"]),
            str(row["in_channels"]),
            f"{row['out_channels']}/{row.get('total_out_channels', row['out_channels'])}",
        ]
        per = (layer_costs or {}).get(row["name"], {})
        cells += [format_cost(per.get(n, 0)) for n in cost_names]
        table.add_row(*cells)
    return table


def _costs(cost: dict[str, float]) -> str:
    return ", ".join(f"{k} {format_cost(v)}" for k, v in cost.items())


def _budget(result: dict, console: Console | None = None) -> None:
    """One line per budget: cost, bound, slack and share used."""
    for name, b in (result.get("budget") or {}).items():
        (console or _console).print(
            f"budget {name}: {b['cost']:,.0f} of {b['budget']:,.0f} ({b['used']:.1%} used, "
            f"slack {b['slack']:,.0f})"
        )


def _metrics(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in metrics.items() if not isinstance(v, dict))


def show_search(result: dict) -> None:
    _console.print(layer_table(result["layers"], title="search result (argmax)"))
    _console.print(f"metrics: {_metrics(result['metrics'])}")
    _console.print(f"cost: {_costs(result['cost'])}")
    _budget(result)


def show_dry_run(result: dict) -> None:
    _console.print(layer_table(result["layers"], title="search space"))
    _console.print(f"cost at initialisation: {_costs(result['cost'])}")
    for line in deployment_lines(result.get("deployment", {})):
        _console.print(line)


def show_export(result: dict) -> None:
    if "check" not in result:  # only the ONNX file of an already exported model
        _console.print(f"ONNX ({result['variant']}): {result['onnx']}, top-1 agreement "
                       f"{result['top1_agreement']:.4f}, max error {result['max_error_lsb']:g} "
                       f"LSB (drift {result.get('drift_max_lsb', 0):g} LSB)")
        return
    _console.print(layer_table(result["layers"], result.get("layer_costs"), "exported model"))
    _console.print(f"metrics (validation; test_* reported only): {_metrics(result['metrics'])}")
    _console.print(f"cost: {_costs(result['cost'])}")
    _budget(result)


def show_finetune(result: dict) -> None:
    _console.print(f"best validation (test reported, not used to choose): "
                   f"{_metrics(result['metrics'])}")
    _console.print(f"cost: {_costs(result['cost'])}")
    _budget(result)


def show_refine(result: dict) -> None:
    table = Table(title=f"{result.get('latency', 'ne16')} (refine --target "
                        f"{result.get('target', 'ne16')})")
    for col in ("layer", "before", "old heuristic", "after"):
        table.add_column(col, justify="right" if col != "layer" else "left")
    for row in [*result["layers"], {"name": "total", **result["total"]}]:
        table.add_row(row["name"], format_cost(row["before"]),
                      format_cost(row["heuristic_cycles"]), format_cost(row["after"]))
    _console.print(table)


def show_eval(result: dict) -> None:
    split = {"val": "validation", "test": "test", "train": "training"}[result["split"]]
    print(f"{result['stage']}, {split} split ({result['samples']} samples): "
          f"{_metrics(result['metrics'])}")


def show_report(result: dict) -> None:
    out = Console(highlight=False, width=_width(sys.stdout))
    out.print(layer_table(result["layers"], result.get("layer_costs"),
                          f"{result['stage']} checkpoint"))
    out.print(f"cost: {_costs(result['cost'])}")
    _budget(result, out)
    if result.get("metrics"):
        out.print(f"metrics: {_metrics(result['metrics'])}")
    if result.get("lineage"):
        out.print(lineage_table(result["lineage"]))
    for line in deployment_lines(result.get("deployment", {})):
        out.print(line)
    for path in result.get("plots", []):
        out.print(f"plot: {path}")


def lineage_table(lineage: list[dict]) -> Table:
    """Accuracy and size at each stage of the pipeline that produced a checkpoint."""
    table = Table(title="pipeline")
    for col in ("stage", "validation accuracy", "test accuracy", "params_bit", "vs fp32"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    base = lineage[0].get("params_bit") or 0
    for row in lineage:
        acc, test = row.get("accuracy"), row.get("test_accuracy")
        bits = row.get("params_bit")
        table.add_row(
            row["stage"],
            f"{acc:.4f}" if acc is not None else "-",
            f"{test:.4f}" if test is not None else "-",
            f"{bits:,.0f}" if bits is not None else "-",
            f"{bits / base:.3f}" if bits and base else "-",
        )
    return table


def show_sweep(result: dict) -> None:
    """The sweep's points by cost, the Pareto front marked, then how baselines compare."""
    cost = result["cost"]
    front = set(result.get("front", []))
    table = Table(title=f"sweep {result.get('recipe', '')} (seed {result.get('seed', '')}): "
                        f"accuracy vs {cost}; * = Pareto front")
    has_test = any("test_accuracy" in p for p in result["points"])
    columns = ["", "point", "kind", cost, "% of top", "budget used", "val acc"]
    columns += ["test acc"] if has_test else []
    for col in columns:
        table.add_column(col, justify="left" if col in ("", "point", "kind") else "right")
    for p in sorted(result["points"], key=lambda p: p["cost"][cost]):
        row = ["*" if p["id"] in front else "", p["id"], p["kind"], f"{p['cost'][cost]:,.0f}",
               f"{p.get('share', 0):.1%}",
               f"{p['used']:.1%}" if p.get("used") is not None else "-",
               f"{p['accuracy']:.4f}"]
        if has_test:
            row.append(f"{p['test_accuracy']:.4f}" if "test_accuracy" in p else "-")
        table.add_row(*row)
    _console.print(table)
    for d in result.get("dominance", []):
        if d["searched"] is None:
            _console.print(f"{d['baseline']} ({d['baseline_accuracy']:.4f}): no searched model "
                           "is as accurate")
        else:
            _console.print(f"{d['baseline']} ({d['baseline_accuracy']:.4f}): {d['searched']} is "
                           f"as accurate ({d['searched_accuracy']:.4f}) at {d['ratio']:.2f}x "
                           "its size")
    if result.get("plot"):
        _console.print(f"plot: {result['plot']}")


def show_sweep_seeds(result: dict) -> None:
    """The points over the seeds by mean size: mean (min-max) of each measure, the front on
    the mean accuracy that ``score_on`` names."""
    cost = result["cost"]
    table = Table(title=f"sweep {result.get('recipe', '')} over seeds "
                        f"{', '.join(str(s) for s in result['seeds'])}: mean (min-max); "
                        f"* = front on mean {result['score_on'].replace('_', ' ')}")
    has_test = any(p["test_accuracy"] for p in result["points"])
    columns = ["", "point", "kind", f"{cost}, % of top", "budget used", "val acc"]
    columns += ["test acc"] if has_test else []
    for col in columns:
        table.add_column(col, justify="left" if col in ("", "point", "kind") else "right")
    for p in result["points"]:
        row = ["*" if p["front"] else "", p["id"], p["kind"], mean_range(p["share"]),
               mean_range(p["used"]), mean_range(p["accuracy"])]
        if has_test:
            row.append(mean_range(p["test_accuracy"]))
        table.add_row(*row)
    _console.print(table)
    if result.get("plot"):
        _console.print(f"plot: {result['plot']}")


def mean_range(stats: dict | None) -> str:
    """``mean (min-max)`` in percent, or ``-`` (the terminal table and the Markdown one of
    scripts/sweep_table.py)."""
    if not stats:
        return "-"
    return f"{100 * stats['mean']:.1f} ({100 * stats['min']:.1f}-{100 * stats['max']:.1f})"
