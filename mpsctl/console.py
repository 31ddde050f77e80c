"""Human output on stderr: log lines and rich progress bars (silenced by ``--quiet``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Reporter:
    """Where stages say what they do; a quiet reporter says nothing."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)

    def log(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message)

    @contextmanager
    def progress(self, description: str, total: int) -> Iterator[Callable[[int, float], None]]:
        """Yield ``advance(step, loss)``: one call per training step."""
        if self.quiet:
            yield lambda step, loss: None
            return
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        with bar:
            task = bar.add_task(description, total=total, loss=float("nan"))
            yield lambda step, loss: bar.update(task, advance=1, loss=loss)


def format_cost(value: float) -> str:
    """A cost for people: whole numbers with separators (cycles, bits), and small values
    (energies in joules) with four significant digits instead of a bare 0."""
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.4g}"
