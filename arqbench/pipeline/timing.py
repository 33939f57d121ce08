"""A result's search time in parts, from any result file: ``search_timing(result)``.

Files written since a cell records its search time in parts (``arqbench.search.ledger``) carry, in ``timing``,
``search_s`` (own work, waits excluded), ``search_wait_s``, ``search_reused_s`` (each cached item reused counted
once, at its cost when measured) and ``search_cost_s`` (own + reused); they are read as they are.

Older files carry ``search_s`` (the search's wall time, waits for another process's lock included) and
``search_cost_s`` (that plus the search info's ``reused_s``, which a method may have summed over every read of
the same cached item). Their parts are derived here from what the file records, by its format, never by the
method's name:

- a search that read the float model's cached certification (``certifier_stats.float_reused``, arq's files):
  ``float_certification_reads``;
- a search that measured a sensitivity profile (``profile_s``, robust-ilp's files): ``profile_waits``;
- otherwise own = the recorded ``search_s``; reused = the info's ``reused_s``, else ``search_cost_s -
  search_s``; wait = None (not recorded);

then ``search_cost_s`` = own + reused. A part that cannot be derived is None. (Plugin API 1.0 let a search plugin
derive them, ``recorded_search_timing``, ``contract.TimedSearch``: a plugin that still has one is read, with a
deprecation warning, until 0.5.)
"""

import warnings

from arqbench import plugins
from arqbench._moved import REMOVED_IN, PluginAPIDeprecation
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
    derive = _plugin_deriver(result.get("method")) or next((d for d in DERIVERS if d.applies(info)), None)
    if derive is not None and own is not None:
        recorded.update(derive(info, timing))
    own, reused = recorded["search_s"], recorded["search_reused_s"]
    recorded["search_cost_s"] = None if own is None or reused is None else own + reused
    return recorded


def float_certification_reads(info: dict, timing: dict) -> dict:
    """A file whose ``reused_s`` (in ``info`` and its ``certifier_stats``) summed the float certification's
    per-image seconds over every read of the cache: ``float_reused`` reads over P scoring passes (the float
    model, then every candidate of ``history`` that is not a revisit), each pass reading the same D search
    images, k = ``float_certified`` of them certified by this cell itself (in its own time). So D =
    (float_reused + k) / P, a read's mean seconds is reused_s / float_reused, and the float certification reused,
    counted once, is (D - k) * reused_s / float_reused: exactly the sum of the cached images' seconds when k = 0
    (each read of an image records the same seconds), their mean times D - k otherwise. Without a history, D is
    the info's ``images``. Such a search took no lock (the cache was read without one): own = the recorded
    ``search_s``, wait = 0."""
    stats = info.get("certifier_stats") or {}
    reads, certified = stats.get("float_reused", 0), stats.get("float_certified", 0)
    history = info.get("history")
    if history:
        images = (reads + certified) / (1 + sum(not h.get("revisit", False) for h in history))
    else:
        images = info.get("images", 0)
    reused = (images - certified) * stats.get("reused_s", 0.0) / reads if reads else 0.0
    return {"search_s": timing.get("search_s"), "search_wait_s": 0.0, "search_reused_s": max(reused, 0.0)}


float_certification_reads.applies = lambda info: bool((info.get("certifier_stats") or {}).get("float_reused"))


def profile_waits(info: dict, timing: dict) -> dict:
    """A file whose ``reused_s`` counted each reused profile point once (and f's numbers when they came from the
    cache), but whose ``search_s`` included the time spent waiting for another process that was measuring the
    same profile. The file records each point's seconds (``profile``), f's (``profile_reference``) and the time
    inside the profile (``profile_s``): this cell measured M = the points' seconds + f's - reused_s (a reused
    point's, and a reused f's, seconds are in reused_s), and wait = max(profile_s - M, 0): the lock wait plus
    the profile's bookkeeping (reading and writing its cache file: milliseconds), so an upper bound on the wait;
    own = search_s - wait. A file without ``reused_s`` is read as recorded, the wait unknown."""
    if "reused_s" not in info:
        return {}
    reused = info["reused_s"]
    measured = (sum(row.get("seconds", 0.0) for row in info.get("profile") or [])
                + (info.get("profile_reference") or {}).get("seconds", 0.0) - reused)
    wait = max(info["profile_s"] - max(measured, 0.0), 0.0)
    return {"search_s": timing["search_s"] - wait, "search_wait_s": wait, "search_reused_s": reused}


profile_waits.applies = lambda info: "profile_s" in info

DERIVERS = (float_certification_reads, profile_waits)


def _plugin_deriver(method):
    """Plugin API 1.0's ``recorded_search_timing`` of the cell's search plugin, if it still has one (deprecated)."""
    try:
        factory = plugins.get("search", method).factory
    except ArqbenchError:  # the fp32 row, or a method whose plugin is not installed here
        return None
    derive = getattr(factory, "recorded_search_timing", None)
    if derive is not None:
        warnings.warn(f"search '{method}' derives old files' search time (recorded_search_timing, contract.TimedSearch): "
                      f"deprecated in plugin API 1.1, not read from arqbench {REMOVED_IN}; arqbench.pipeline.timing "
                      f"derives it from what the file records", PluginAPIDeprecation, stacklevel=2)
    return derive


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
