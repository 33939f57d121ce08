"""One rich console for progress, tables and warnings."""

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

console = Console(stderr=True)  # progress, warnings, logs
stdout = Console()  # tables a user may pipe


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}", highlight=False)


def info(message: str) -> None:
    console.print(message, highlight=False)


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True, disable=not console.is_terminal,
    )
