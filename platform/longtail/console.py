"""Terminal output for the CLI: progress bars and metric tables (rich)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from longtail.eval.evaluate import EvalResult
from longtail.eval.metrics import METRIC_KEYS

console = Console(stderr=True)
out = Console()


@contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[Callable[[int, int], None]]:
    """A progress bar; yields ``update(done, total)``."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total)

        def update(done: int, total_now: int) -> None:
            bar.update(task, completed=done, total=total_now)

        yield update


@contextmanager
def progress_tasks() -> Iterator[Callable[[str], Callable[[int, int], None]]]:
    """One live display for several tasks in turn; yields ``start(description) -> update(done, total)``."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:

        def start(description: str) -> Callable[[int, int], None]:
            task = bar.add_task(description, total=None)
            return lambda done, total: bar.update(task, completed=done, total=total)

        yield start


def metric_table(results: Sequence[EvalResult], title: str) -> Table:
    """Metric keys as rows, models as columns (fits a narrow terminal)."""
    table = Table(title=title)
    table.add_column("metric")
    for r in results:
        table.add_column(r.model, justify="right")
    for key in METRIC_KEYS:
        table.add_row(
            key, *("–" if r.metrics[key] != r.metrics[key] else f"{r.metrics[key]:.4f}" for r in results)
        )
    return table
