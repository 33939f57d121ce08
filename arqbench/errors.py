"""Errors a user can fix: the CLI prints their message as one line and exits non-zero."""


class ArqbenchError(Exception):
    """A problem with the user's input, files or plugins, stated as one line: what, where, how to fix."""


class InfeasibleBudget(ArqbenchError):
    """No bit policy within the allowed bit range meets the cost budget."""


class SkipBenchmark(ArqbenchError):
    """A benchmark cannot run here (missing data or checkpoint); the message says what to provide."""


class Busy(Exception):
    """Shared work a cell needs (a cached sensitivity profile) is being computed by another process right now.
    Raised only when the cell was asked not to wait (``SearchContext.wait_for_shared``); the sweep then runs its
    other cells first and retries this one, waiting, with the cells claimed by other processes."""
