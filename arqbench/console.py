"""One rich console for progress, tables and messages.

A message is printed as given (never read as rich markup: a path may hold brackets) and stays one
line when stderr is not a terminal (a pipe, a CI log), so grep finds it whole; on a terminal it wraps
to the window and progress bars show.
"""

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

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


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True, disable=not console.is_terminal,
    )
