"""A result's search time in parts, from any result file: ``search_timing(result)``.

Files written since a cell records its search time in parts (``arqbench.search.ledger``) carry, in ``timing``,
``search_s`` (own work, waits excluded), ``search_wait_s``, ``search_reused_s`` (each cached item reused counted
once, at its cost when measured) and ``search_cost_s`` (own + reused); they are read as they are.

Older files carry ``search_s`` (the search's wall time, waits for another process's lock included) and
``search_cost_s`` (that plus the search info's ``reused_s``, which a method may have summed over every read of
the same cached item). Their parts are derived from what the file records:

- when the cell's search plugin is installed and has ``recorded_search_timing(info, timing)`` (an optional
  static method of a ``Search``, ``arqbench.contract``), the parts it derives from its own search info (the
  plugin's docstring says how, and how faithfully);
- otherwise own = the recorded ``search_s``; reused = the info's ``reused_s``, else ``search_cost_s -
  search_s``; wait = None (not recorded);

then ``search_cost_s`` = own + reused. A part that cannot be derived is None.
"""

from arqbench import plugins
from arqbench.errors import ArqbenchError

SEARCH_TIMINGS = ("search_s", "search_wait_s", "search_reused_s", "search_cost_s")


def search_timing(result: dict) -> dict:
    """``{search_s, search_wait_s, search_reused_s, search_cost_s}`` of a result record (module docstring)."""
    timing = result.get("timing") or {}
    if "search_reused_s" in timing:
        return {key: timing.get(key) for key in SEARCH_TIMINGS}
    info = result.get("search") or {}
    own = timing.get("search_s")
    recorded = {"search_s": own, "search_wait_s": None,
                "search_reused_s": info.get("reused_s", (timing.get("search_cost_s") or own or 0.0) - (own or 0.0))}
    derive = _deriver(result.get("method"))
    if derive is not None and own is not None:
        recorded.update(derive(info, timing))
    own, reused = recorded["search_s"], recorded["search_reused_s"]
    recorded["search_cost_s"] = None if own is None or reused is None else own + reused
    return recorded


def _deriver(method):
    try:
        factory = plugins.get("search", method).factory
    except ArqbenchError:  # the fp32 row, or a method whose plugin is not installed here
        return None
    return getattr(factory, "recorded_search_timing", None)


BUSY_RATIO = 0.85  # a cell whose process had the CPU less than this share of its wall time was timed under load


def cpu_share(result: dict) -> float | None:
    """The cell's process CPU seconds over its wall seconds, lock waits excluded (files since cells record
    ``cpu_s``; else None). A cell alone on its cores runs at about its thread count's share, at least 1 on one
    thread; a cell descheduled by other work on the machine falls below ``BUSY_RATIO``, and its seconds are
    not the method's cost."""
    timing = result.get("timing") or {}
    wall, cpu = timing.get("wall_s"), timing.get("cpu_s")
    if not wall or cpu is None:
        return None
    return cpu / max(wall - (timing.get("search_wait_s") or 0.0), 1e-9)
