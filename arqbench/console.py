"""One rich console for progress, tables and messages.

A table is printed whole if it fits the window (80 columns off a terminal unless COLUMNS says otherwise),
else as several tables that do, each repeating the columns that name a row: a number or a name is never
folded across lines.

A message is printed as given (never read as rich markup: a path may hold brackets) and stays one
line when stderr is not a terminal (a pipe, a CI log), so grep finds it whole; on a terminal it wraps
to the window and progress bars show.
"""

import copy
from dataclasses import replace

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(stderr=True)  # progress, warnings, logs
stdout = Console()  # tables a user may pipe


def say(message: str, prefix: str = "") -> None:
    """Print ``prefix`` (rich markup) then ``message`` (plain text) as one message."""
    console.print(prefix + escape(message), highlight=False, soft_wrap=not console.is_terminal)


def warn(message: str) -> None:
    say(message, "[yellow]warning:[/yellow] ")


def info(message: str, prefix: str = "") -> None:
    say(message, prefix)


def failed(message: str) -> None:
    say(message, "[red]failed:[/red] ")


DEBUG = False  # ``arqbench --debug``: print tracebacks as they happen


def debug(text: str) -> None:
    """Print ``text`` (a traceback) as it is, lines and all, when ``DEBUG`` is on."""
    if DEBUG:
        console.print(text.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("left"), TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal,
    )


@contextmanager
def steps(description: str, total: int) -> Iterator[Callable[[], None]]:
    """A progress bar of ``total`` steps with the time left, nested under any bar already shown; yields the
    callable that advances it by one. Shown only on a terminal (nothing is printed to a pipe or a log)."""
    with progress() as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


def natural_width(table: Table, console: Console = stdout) -> int:
    """The columns ``table`` needs to print every cell on one line (its title and caption wrap)."""
    return Measurement.get(console, console.options.update_width(10_000), table).maximum


def fitted(table: Table, width: int, keep: int = 1) -> list[Table]:
    """``table`` if it is at most ``width`` wide, else tables of its first ``keep`` columns and as many of the
    others as fit, in order (the title on the first, the caption on the last)."""
    if natural_width(table) <= width or len(table.columns) <= keep + 1:
        return [table]
    head, parts = table.columns[:keep], [[]]
    for column in table.columns[keep:]:
        if parts[-1] and natural_width(_with(table, head + parts[-1] + [column])) > width:
            parts.append([])
        parts[-1].append(column)
    tables = [_with(table, head + part) for part in parts]
    for i, t in enumerate(tables):
        t.title = table.title if i == 0 else None
        t.caption = table.caption if i == len(tables) - 1 else None
        t.show_footer = table.show_footer and any(c.footer for c in t.columns[keep:])
    return tables


def _with(table: Table, columns: list) -> Table:
    """A copy of ``table`` with these columns (and their cells)."""
    t = copy.copy(table)
    t.columns = [replace(c, _index=i) for i, c in enumerate(columns)]
    return t


def print_table(table: Table, keep: int = 1) -> None:
    """Print ``table`` on stdout, split by columns (``fitted``) where it is wider than the window."""
    print_tables(fitted(table, stdout.width, keep))


def print_tables(tables: list[Table]) -> None:
    """Print tables on stdout, a blank line between them."""
    for i, table in enumerate(tables):
        if i:
            stdout.print()
        stdout.print(table)
