"""Human-readable output of each command: rich tables on stderr."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table


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
        cells += [f"{per.get(n, 0):,.0f}" for n in cost_names]
        table.add_row(*cells)
    return table


def _costs(cost: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:,.0f}" for k, v in cost.items())


def _metrics(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in metrics.items() if not isinstance(v, dict))


def show_search(result: dict) -> None:
    _console.print(layer_table(result["layers"], title="search result (argmax)"))
    _console.print(f"metrics: {_metrics(result['metrics'])}")
    _console.print(f"cost: {_costs(result['cost'])}")


def show_dry_run(result: dict) -> None:
    _console.print(layer_table(result["layers"], title="search space"))
    _console.print(f"cost at initialisation: {_costs(result['cost'])}")


def show_export(result: dict) -> None:
    if "check" not in result:  # only the ONNX file of an already exported model
        _console.print(f"ONNX ({result['variant']}): {result['onnx']}, top-1 agreement "
                       f"{result['top1_agreement']:.4f}, max error {result['max_error_lsb']:g} "
                       "LSB")
        return
    _console.print(layer_table(result["layers"], result.get("layer_costs"), "exported model"))
    _console.print(f"validation: {_metrics(result['metrics'])}")
    _console.print(f"cost: {_costs(result['cost'])}")


def show_finetune(result: dict) -> None:
    _console.print(f"best validation: {_metrics(result['metrics'])}")
    _console.print(f"cost: {_costs(result['cost'])}")


def show_refine(result: dict) -> None:
    table = Table(title="NE16 cycles")
    for col in ("layer", "before", "old heuristic", "after"):
        table.add_column(col, justify="right" if col != "layer" else "left")
    for row in [*result["layers"], {"name": "total", **result["total"]}]:
        table.add_row(row["name"], f"{row['before']:,}", f"{row['heuristic_cycles']:,}",
                      f"{row['after']:,}")
    _console.print(table)


def show_eval(result: dict) -> None:
    print(f"{result['stage']}: {_metrics(result['metrics'])}")


def show_report(result: dict) -> None:
    out = Console(highlight=False, width=_width(sys.stdout))
    out.print(layer_table(result["layers"], result.get("layer_costs"),
                          f"{result['stage']} checkpoint"))
    out.print(f"cost: {_costs(result['cost'])}")
    if result.get("metrics"):
        out.print(f"metrics: {_metrics(result['metrics'])}")
    if result.get("lineage"):
        out.print(lineage_table(result["lineage"]))
    for path in result.get("plots", []):
        out.print(f"plot: {path}")


def lineage_table(lineage: list[dict]) -> Table:
    """Accuracy and size at each stage of the pipeline that produced a checkpoint."""
    table = Table(title="pipeline")
    for col in ("stage", "validation accuracy", "params_bit", "vs fp32"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    base = lineage[0].get("params_bit") or 0
    for row in lineage:
        acc = row.get("accuracy")
        bits = row.get("params_bit")
        table.add_row(
            row["stage"],
            f"{acc:.4f}" if acc is not None else "-",
            f"{bits:,.0f}" if bits is not None else "-",
            f"{bits / base:.3f}" if bits and base else "-",
        )
    return table
