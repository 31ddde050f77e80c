"""The `mpsctl` command line: parse, call a stage, print. Heavy imports happen per command.

Conventions: `--json` prints exactly one JSON object on stdout; human output and progress
go to stderr; a command that writes a checkpoint prints its path as the last stdout line.
Exit codes: 0 success, 2 bad input (one line naming the field and the fix), 1 otherwise.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="mpsctl",
    help="Mixed-precision search, export, fine-tuning and NE16 refinement for CNNs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or logs.")]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue from the run's last.pt.")
]
TensorBoardOpt = Annotated[
    bool, typer.Option("--tensorboard",
                       help="Also write TensorBoard event files (same as log.tensorboard=true).")
]
#: What --tensorboard adds to the recipe overrides.
TENSORBOARD_OVERRIDE = "log.tensorboard=true"
CkptArg = Annotated[
    str | None, typer.Argument(help="Checkpoint; default: the newest under ./runs.")
]


def _print_version(value: bool) -> None:
    if value:
        from mpsctl.version import __version__

        typer.echo(f"mpsctl {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True,
                     help="Print the version and exit."),
    ] = False,
) -> None:
    """Mixed-precision search, export, fine-tuning and NE16 refinement for CNNs."""


def _fail(code: int, message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _run(action: Callable[[], Any], stage: bool = True) -> Any:
    """Run a stage, mapping bad input to exit 2 and other failures to exit 1 (one line).

    ``stage=False`` is for commands that never start a process group (``cp``, listings of
    shipped files): they skip the distributed bookkeeping, and with it importing torch.
    """
    from mpsctl.errors import Interrupted, UserError

    try:
        result = action()
        if not stage:
            return result
        from mpsctl.training import distributed

        if not distributed.is_main():
            distributed.shutdown()
            raise typer.Exit(0)
        distributed.shutdown()
        return result
    except UserError as exc:
        _fail(2, str(exc))
    except Interrupted as exc:
        _fail(130, f"{exc}; resume with the same command and --resume")
    except KeyboardInterrupt:
        _fail(130, "interrupted")
    except typer.Exit:
        raise
    except Exception as exc:  # the user gets one line; MPSCTL_DEBUG=1 shows the trace-back
        if os.environ.get("MPSCTL_DEBUG"):
            raise
        _fail(1, f"{type(exc).__name__}: {exc} (set MPSCTL_DEBUG=1 for the trace-back)")


def _emit(
    result: dict[str, Any], as_json: bool, human: Callable[[dict], None], quiet: bool = False
) -> None:
    if as_json:
        typer.echo(json.dumps(result, default=_jsonable))
        return
    if not quiet:
        _run(lambda: human(result))  # a rendering bug still ends in one line, not a trace-back
    if "checkpoint" in result:
        typer.echo(result["checkpoint"])


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _reporter(quiet: bool, as_json: bool):
    from mpsctl.console import Reporter

    return Reporter(quiet=quiet)


def _split(args: list[str] | None) -> tuple[str | None, list[str]]:
    """``[CKPT] [key=value ...]`` → checkpoint path (if any) and overrides."""
    path, overrides = None, []
    for arg in args or []:
        if "=" in arg:
            overrides.append(arg)
        elif path is None:
            path = arg
        else:
            _fail(2, f"unexpected argument '{arg}' (overrides look like key=value)")
    return path, overrides


@app.command()
def search(
    recipe: Annotated[str, typer.Argument(help="Recipe YAML file.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show layers and costs only.")] = False,
    resume: ResumeOpt = False,
    tensorboard: TensorBoardOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Warm up (optional) and search precisions; writes search.pt."""

    def action():
        from mpsctl.recipe import load_recipe
        from mpsctl.stages.search import dry_run as do_dry_run
        from mpsctl.stages.search import run_search

        extra = [TENSORBOARD_OVERRIDE] if tensorboard else []
        loaded = load_recipe(recipe, (overrides or []) + extra)
        if dry_run:
            return do_dry_run(loaded)
        return run_search(loaded, _reporter(quiet, as_json), resume=resume)

    result = _run(action)
    from mpsctl.cli import views

    _emit(result, as_json, views.show_dry_run if dry_run else views.show_search, quiet)


@app.command()
def sweep(
    recipe: Annotated[str, typer.Argument(help="Recipe YAML file.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides.")] = None,
    budgets: Annotated[
        str | None, typer.Option("--budgets", help="Comma-separated budgets, e.g. 5%,10%,24KiB.")
    ] = None,
    strengths: Annotated[
        str | None, typer.Option("--strengths", help="Comma-separated strengths, e.g. 1e-6,3e-6.")
    ] = None,
    cost: Annotated[
        str | None, typer.Option("--cost", help="Swept cost; default: the recipe's own budget "
                                 "or strength, else params_bit.")
    ] = None,
    no_baselines: Annotated[
        bool, typer.Option("--no-baselines", help="Only the searched points.")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Skip the points a previous run finished.")
    ] = False,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", help="Points run side by side in worker processes, "
                          "sharing the CPU threads (2 on a 2-core machine).")
    ] = 1,
    seeds: Annotated[
        str | None, typer.Option("--seeds", help="Comma-separated seeds, e.g. 0,1,2: one sweep "
                                 "per seed in runs/<name>/seed-<S>/, then seeds.json with the "
                                 "mean and range of every point.")
    ] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Search → export → finetune at several budgets plus baselines; writes sweep.json."""

    def action():
        from mpsctl.errors import UserError
        from mpsctl.recipe import load_recipe
        from mpsctl.stages.sweep import parse_list, run_sweep

        loaded = load_recipe(recipe, overrides or [])
        values = []
        for text in parse_list(strengths, "--strengths"):
            try:
                values.append(float(text))
            except ValueError:
                raise UserError(f"--strengths: {text!r} is not a number (e.g. 1e-6)") from None
            if not values[-1] > 0:
                raise UserError(f"--strengths: {text} must be positive")
        reporter = _reporter(quiet, as_json)
        options = {"budget_texts": parse_list(budgets, "--budgets"), "strengths": values,
                   "cost": cost, "baselines": not no_baselines, "resume": resume, "jobs": jobs}
        if seeds is None:
            result = run_sweep(loaded, reporter, **options)
            result["plot"] = _pareto_plot(result, reporter)
            return result
        from mpsctl.stages.seeds import run_sweep_seeds

        result = run_sweep_seeds(loaded, reporter, _seed_list(seeds), **options)
        for path in result["sweeps"]:
            sweep = json.loads(Path(path).read_text())
            _pareto_plot({**sweep, "run_dir": str(Path(path).parent)}, reporter)
        result["plot"] = _pareto_plot(result, reporter, over_seeds=True)
        return result

    result = _run(action)
    from mpsctl.cli import views

    if as_json:
        typer.echo(json.dumps(result, default=_jsonable))
        return
    if not quiet:
        _run(lambda: (views.show_sweep_seeds if seeds else views.show_sweep)(result))
    typer.echo(result["file"] if seeds else result["sweep"])


def _seed_list(text: str) -> list[int]:
    """``--seeds 0,1,2`` as numbers (one-line errors for an empty list or a non-number)."""
    from mpsctl.errors import UserError
    from mpsctl.stages.sweep import parse_list

    out = []
    for item in parse_list(text, "--seeds"):
        try:
            out.append(int(item))
        except ValueError:
            raise UserError(
                f"--seeds: {item!r} is not a whole number (e.g. --seeds 0,1,2)"
            ) from None
    return out


def _pareto_plot(result: dict[str, Any], reporter, over_seeds: bool = False) -> str | None:
    """``pareto.png`` beside ``sweep.json`` or ``seeds.json`` (rank 0 only; skipped without
    matplotlib)."""
    from mpsctl.cli.plots import plot_pareto, plot_pareto_seeds
    from mpsctl.errors import MissingPackageError
    from mpsctl.training import distributed

    if not distributed.is_main():
        return None
    path = Path(result["run_dir"]) / "pareto.png"
    try:
        return str((plot_pareto_seeds if over_seeds else plot_pareto)(result, path))
    except MissingPackageError as exc:
        reporter.log(f"no {path.name}: {exc}")
        return None


@app.command()
def validate(
    recipe: Annotated[str, typer.Argument(help="Recipe YAML file.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a recipe and everything a run builds before training; print it resolved.

    Checks the schema, device, model, data, that the model takes the data, and the
    conversion to a supernet on one example batch. Exit 2 lists every problem.
    """

    def action():
        from mpsctl.stages.validate import run_validate

        return run_validate(recipe, overrides or [])

    result = _run(action)
    if not as_json:
        for found in result.get("warnings", []):
            typer.echo(f"warning: {found['field']}: {found['message']}", err=True)
    if as_json:
        typer.echo(json.dumps(result, default=_jsonable))
    elif result["valid"]:
        import yaml

        typer.echo(yaml.safe_dump(result["recipe"], sort_keys=False), nl=False)
        typer.echo(f"recipe is valid (checked: {', '.join(result['checks'])})", err=True)
    else:
        for found in result["problems"]:
            field = f"{found['field']}: " if found["field"] else ""
            typer.echo(f"error: {field}{found['message']}", err=True)
    if not result["valid"]:
        raise typer.Exit(2)


@app.command()
def export(
    ckpt: CkptArg = None,
    onnx: Annotated[
        str | None, typer.Option("--onnx", help="Also write an integer ONNX model here.")
    ] = None,
    onnx_variant: Annotated[
        str, typer.Option("--onnx-variant",
                          help="integer (integer-only ops), qdq, or qonnx (real bit-widths).")
    ] = "integer",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fixed-precision model from a search/refine checkpoint; writes export.pt.

    With --onnx, also writes the ONNX graph (integer, QDQ or QONNX), verified by running it.
    """

    def action():
        from mpsctl.stages.common import pick_checkpoint
        from mpsctl.stages.export import run_export_command

        reporter = _reporter(quiet, as_json)
        return run_export_command(pick_checkpoint(ckpt, reporter), reporter, onnx, onnx_variant)

    result = _run(action)
    from mpsctl.cli import views

    _emit(result, as_json, views.show_export, quiet)


@app.command()
def finetune(
    args: Annotated[list[str] | None, typer.Argument(help="[CKPT] [key=value ...]")] = None,
    resume: ResumeOpt = False,
    tensorboard: TensorBoardOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Quantization-aware fine-tuning of an exported model; writes finetune.pt."""
    path, overrides = _split(args)
    if tensorboard:
        overrides.append(TENSORBOARD_OVERRIDE)

    def action():
        from mpsctl.stages.common import pick_checkpoint
        from mpsctl.stages.finetune import run_finetune

        reporter = _reporter(quiet, as_json)
        return run_finetune(pick_checkpoint(path, reporter), overrides, reporter, resume)

    result = _run(action)
    from mpsctl.cli import views

    _emit(result, as_json, views.show_finetune, quiet)


@app.command()
def refine(
    ckpt: CkptArg = None,
    target: Annotated[str, typer.Option("--target", help="Accelerator model.")] = "ne16",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Promote channels where the target's tiles get cheaper; writes refine.pt."""

    def action():
        from mpsctl.stages.common import pick_checkpoint
        from mpsctl.stages.refine import run_refine

        reporter = _reporter(quiet, as_json)
        return run_refine(pick_checkpoint(ckpt, reporter), target, reporter)

    result = _run(action)
    from mpsctl.cli import views

    _emit(result, as_json, views.show_refine, quiet)


@app.command("eval")
def eval_(
    ckpt: CkptArg = None,
    split: Annotated[
        str, typer.Option("--split", help="Data split: val (default), test or train.")
    ] = "val",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Accuracy and loss of any stage's model on the validation (or test/train) split."""

    def action():
        from mpsctl.stages.common import pick_checkpoint
        from mpsctl.stages.evaluate import run_eval

        return run_eval(pick_checkpoint(ckpt, _reporter(quiet, as_json)), split)

    result = _run(action)
    from mpsctl.cli import views

    if as_json:
        typer.echo(json.dumps(result))
    else:
        views.show_eval(result)


@app.command()
def report(
    ckpt: CkptArg = None,
    plot: Annotated[str | None, typer.Option("--plot", help="Write PNG plots here.")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Per-layer precisions, channels and costs (recomputed from the model)."""

    def action():
        from mpsctl.stages.common import pick_checkpoint
        from mpsctl.stages.evaluate import run_report

        result = run_report(pick_checkpoint(ckpt, _reporter(quiet, as_json)))
        if plot:
            from mpsctl.cli.plots import write_plots

            result["plots"] = [str(p) for p in write_plots(result, Path(plot))]
        return result

    result = _run(action)
    from mpsctl.cli import views

    if as_json:
        typer.echo(json.dumps(result, default=_jsonable))
    else:
        views.show_report(result)


@app.command("ls")
def ls(
    what: Annotated[
        str, typer.Argument(help="models, datasets, costs, recipes or configs")
    ] = "models",
    recipe: Annotated[str | None, typer.Option(
        "--recipe", help="With costs: add the cost models of the recipe's own targets "
        "(search.targets).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List registered models, datasets, cost models, or shipped recipes and configs."""

    def action():
        from mpsctl.cli import catalog

        return catalog.listing(what, recipe)

    items = _run(action, stage=what not in ("recipes", "configs"))
    if as_json:
        typer.echo(json.dumps({what: items}))
    else:
        for item in items:
            typer.echo(item)


@app.command("cp")
def cp(
    name: Annotated[str, typer.Argument(help="Shipped recipe or config (see mpsctl ls).")],
    dest: Annotated[
        str | None, typer.Argument(help="File or folder; default: the current folder.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Copy a shipped recipe or config to edit; prints the new file's path."""

    def action():
        from mpsctl.cli import catalog

        return catalog.copy_bundled(name, dest, force)

    path = str(_run(action, stage=False))
    typer.echo(json.dumps({"file": path}) if as_json else path)


def main() -> None:
    try:
        app()
    finally:
        # Tearing down the interpreter collects torch's hundreds of thousands of objects one
        # by one: about 0.4 s of every command's wall time. Freezing them first skips that
        # work; exit handlers still run and every file is already closed.
        gc.freeze()


if __name__ == "__main__":
    main()
    sys.exit(0)
