"""A failed cell, told so it can be debugged: one line naming the plugin that raised and the exception's type
(even when its message is empty), and the whole traceback, kept in the cell's result file.

An exception raised in another process (a Ray worker) loses its traceback on the way back; ``annotate`` it
there and both survive the trip (they travel in the exception's ``__dict__``).
"""

import traceback
from types import TracebackType

from arqbench import plugins
from arqbench.errors import ArqbenchError

_TRACEBACK, _MODULES = "arqbench_traceback", "arqbench_modules"


def annotate(error: BaseException) -> BaseException:
    """Keep ``error``'s traceback text and the modules of its frames on it, for another process to read."""
    if not hasattr(error, _TRACEBACK):
        setattr(error, _TRACEBACK, _format(error))
        setattr(error, _MODULES, _frame_modules(error.__traceback__))
    return error


def traceback_text(error: BaseException) -> str:
    """The traceback of ``error`` as Python prints it."""
    return getattr(error, _TRACEBACK, None) or _format(error)


def summary(error: BaseException, used: dict[str, str]) -> str:
    """One line: an ArqbenchError's own message (it names what to fix); otherwise "search 'boom' (plugin
    'boom-plugin') raised NotImplementedError: ..." naming, of the plugins the cell ``used`` (``{kind: name}``),
    the one whose code raised, and the exception's type."""
    message = str(error).strip()
    if isinstance(error, ArqbenchError) and message:
        return message.splitlines()[0]
    where = culprit(error, used)
    said = f": {message.splitlines()[0]}" if message else " (with no message)"
    return f"{where + ' raised ' if where else ''}{type(error).__name__}{said}"


def culprit(error: BaseException, used: dict[str, str]) -> str:
    """``search 'boom' (plugin 'boom-plugin')``: the used plugin whose module holds the innermost frame of
    ``error``'s traceback, or "" when none does (the core raised)."""
    modules = getattr(error, _MODULES, None) or _frame_modules(error.__traceback__)
    owners = {}
    for kind, name in used.items():
        entry = plugins.registries().get(kind, {}).get(name)
        module = getattr(plugins.pm.get_plugin(entry.plugin), "__name__", None) if entry else None
        if isinstance(module, str):
            owners.setdefault(module, (kind, name, entry.plugin))
    for module in reversed(modules):
        for owner, (kind, name, plugin) in owners.items():
            if module == owner or module.startswith(_package(owner) + "."):
                return f"{kind.replace('_', ' ')} '{name}' (plugin '{plugin}')"
    return ""


def _package(module: str) -> str:
    """Where a plugin's own helpers live: its package for a third party's (``acme.search`` -> ``acme``), the
    module itself for arqbench's own plugins (their siblings are other plugins)."""
    package = module.rpartition(".")[0]
    return module if not package or module.startswith("arqbench.") else package


def _frame_modules(tb: TracebackType | None) -> list[str]:
    """The ``__name__`` of each frame's module, outermost first."""
    modules = []
    while tb is not None:
        modules.append(tb.tb_frame.f_globals.get("__name__", ""))
        tb = tb.tb_next
    return modules


def _format(error: BaseException) -> str:
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))
