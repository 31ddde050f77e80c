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
CkptArg = Annotated[
    str | None, typer.Argument(help="Checkpoint; default: the newest under ./runs.")
]


def _fail(code: int, message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _run(action: Callable[[], Any]) -> Any:
    """Run a stage, mapping bad input to exit 2 and other failures to exit 1 (one line)."""
    from mpsctl.errors import Interrupted, UserError
    from mpsctl.training import distributed

    try:
        result = action()
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
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Warm up (optional) and search precisions; writes search.pt."""

    def action():
        from mpsctl.recipe import load_recipe
        from mpsctl.stages.search import dry_run as do_dry_run
        from mpsctl.stages.search import run_search

        loaded = load_recipe(recipe, overrides or [])
        if dry_run:
            return do_dry_run(loaded)
        return run_search(loaded, _reporter(quiet, as_json), resume=resume)

    result = _run(action)
    from mpsctl.cli import views

    _emit(result, as_json, views.show_dry_run if dry_run else views.show_search, quiet)


@app.command()
def validate(
    recipe: Annotated[str, typer.Argument(help="Recipe YAML file.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a recipe (with overrides) and print the resolved result."""

    def action():
        from mpsctl.recipe import load_recipe, recipe_to_dict

        return {"recipe": recipe_to_dict(load_recipe(recipe, overrides or [])), "valid": True}

    result = _run(action)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        import yaml

        typer.echo(yaml.safe_dump(result["recipe"], sort_keys=False), nl=False)
        typer.echo("recipe is valid", err=True)


@app.command()
def export(
    ckpt: CkptArg = None,
    onnx: Annotated[
        str | None, typer.Option("--onnx", help="Also write an integer ONNX model here.")
    ] = None,
    onnx_variant: Annotated[
        str, typer.Option("--onnx-variant", help="integer (integer-only ops) or qdq.")
    ] = "integer",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fixed-precision model from a search/refine checkpoint; writes export.pt.

    With --onnx, also writes the integer ONNX graph, verified with onnxruntime.
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
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Quantization-aware fine-tuning of an exported model; writes finetune.pt."""
    path, overrides = _split(args)

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
def eval_(ckpt: CkptArg = None, as_json: JsonOpt = False) -> None:
    """Validation accuracy and loss of any stage's model."""

    def action():
        from mpsctl.console import Reporter
        from mpsctl.stages.common import pick_checkpoint
        from mpsctl.stages.evaluate import run_eval

        return run_eval(pick_checkpoint(ckpt, Reporter()))

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
) -> None:
    """Per-layer precisions, channels and costs (recomputed from the model)."""

    def action():
        from mpsctl.console import Reporter
        from mpsctl.stages.common import pick_checkpoint
        from mpsctl.stages.evaluate import run_report

        result = run_report(pick_checkpoint(ckpt, Reporter()))
        if plot:
            from pathlib import Path

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
    what: Annotated[str, typer.Argument(help="models, datasets, costs or recipes")] = "models",
    as_json: JsonOpt = False,
) -> None:
    """List registered models, datasets, cost models or shipped recipes."""

    def action():
        from mpsctl.cli import catalog

        return catalog.listing(what)

    items = _run(action)
    if as_json:
        typer.echo(json.dumps({what: items}))
    else:
        for item in items:
            typer.echo(item)


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
