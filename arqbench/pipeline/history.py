"""A search's history as a result file stores it: one row per scored candidate, its policy as bits in layer order.

A search records ``info["history"]`` as a list of dicts, each with the candidate's ``policy`` (``{layer: [w, a]}``)
and its scores. 600 episodes of that, every layer named in every record, made a digits-mobilenetv2 cell a few MB.
On disk it is ``{"layers": [names], "keys": [record keys], "rows": [[value, ..., [[w, a], ...], ...], ...]}``
(each row holds the record's values in ``keys`` order, the policy as bits in ``layers`` order), written one row
per line; ``expand`` gives the list of dicts back exactly, so every reader (``show``, the figures, the benchmarks)
sees what the search recorded. A history whose records do not all share their keys and layers is stored as is.
"""

import json

from arqbench.files import jsonable

POLICY = "policy"


def compact(history) -> dict | list:
    """The stored form of ``history`` (module docstring), or ``history`` itself where it cannot be."""
    if not isinstance(history, list) or not history or not all(isinstance(h, dict) for h in history):
        return history
    keys = list(history[0])
    if POLICY not in keys or not isinstance(history[0][POLICY], dict):
        return history
    layers = list(history[0][POLICY])
    if any(list(h) != keys or not isinstance(h[POLICY], dict) or list(h[POLICY]) != layers for h in history):
        return history
    rows = [[[list(h[POLICY][name]) for name in layers] if key == POLICY else h[key] for key in keys]
            for h in history]
    return {"layers": layers, "keys": keys, "rows": rows}


def expand(stored) -> list:
    """The list of records ``compact`` was given (a history stored as it was is returned as it is)."""
    if not (isinstance(stored, dict) and {"layers", "keys", "rows"} <= set(stored)):
        return stored
    layers, keys = stored["layers"], stored["keys"]
    return [{key: dict(zip(layers, value)) if key == POLICY else value for key, value in zip(keys, row)}
            for row in stored["rows"]]


def dumps(result: dict) -> str:
    """A result record as indented JSON, as every result file, its search history compacted, a row per line."""
    search = result.get("search")
    stored = compact(search.get("history")) if isinstance(search, dict) else None
    if not isinstance(stored, dict):
        return json.dumps(result, indent=1, default=jsonable)
    marks = [f"\0row {k}\0" for k in range(len(stored["rows"]))]
    text = json.dumps({**result, "search": {**search, "history": {**stored, "rows": marks}}}, indent=1,
                      default=jsonable)
    for mark, row in zip(marks, stored["rows"]):
        text = text.replace(json.dumps(mark), json.dumps(row, separators=(",", ":"), default=jsonable), 1)
    return text
