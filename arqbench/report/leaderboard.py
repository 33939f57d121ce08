"""Leaderboards: per benchmark, one table per (sigma, budget), ranked by mean ACR, the fp32 row on top.

A row is one method: the mean ± sample std over its seeds that succeeded, with a link to every seed's
result file (relative to the leaderboard file). Nothing is hidden: a row with failed seeds, over its
budget, or measured on another base model than the fp32 row stays in its table with a note; only rows
within budget on the fp32 row's base model get a rank (ties share it).

Results made under different protocol settings (n0, n, alpha, test images, fine-tune epochs, episodes,
quantizer, cost model, ...) are never averaged or ranked together: each distinct setting is a protocol,
named A, B, ... when a benchmark has several, with its own tables, plots and line in the header. The fp32
row, which records only certification settings, joins every protocol whose certification settings it
matches. Two result files for the same cell under the same protocol (e.g. two runs' directories under
one ``--results``) are an error naming both.

Formats (``--format``), one file per benchmark in the output directory:

- ``markdown``: ``<benchmark>.md``, and beside it a Pareto plot per sigma (and protocol),
  ``<benchmark>-sigma<sigma>[-<protocol>].png``, shown in that sigma's section.
- ``csv``: ``<benchmark>.csv``, one row per leaderboard row (seeds aggregated; the fp32 row once per
  sigma, with an empty budget): ``<metric>_mean`` and ``<metric>_std`` in the result files' units
  (accuracies and rates as fractions, ``bitops_pct`` in percent), rank, note, seeds, and ``results``: the
  result files, relative to the csv, space-separated.
- ``json``: ``<benchmark>.json``: the protocols' settings and the same rows as the csv, each with
  ``runs``: one entry per result file (seed, status, error, path, its own numbers).
"""

import json
import math
import os
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pandas as pd
from tabulate import tabulate

from arqbench.errors import ArqbenchError
from arqbench.files import write_bytes_atomic, write_json_atomic, write_text_atomic
from arqbench.pipeline.results import REFERENCE

# (key, heading, scale, digits) of the numbers of a row, in table order; certified accuracies follow smoothed_acc
HEAD = [("bitops_pct", "BitOPs %", 1, 2), ("size_kib", "Size (KiB)", 1, 1), ("clean_acc", "Clean acc %", 100, 1),
        ("smoothed_acc", "Smoothed acc %", 100, 1)]
TAIL = [("acr", "ACR", 1, 3), ("abstain_rate", "Abstain %", 100, 1), ("search_s", "Search (s)", 1, 1)]
COST_NAMES = {"bitops": "BitOPs"}
FORMATS = {"markdown": "md", "csv": "csv", "json": "json"}


@dataclass
class Row:
    """One method in one table: its runs (one per seed) and their aggregate."""

    method: str  # the method's name, with its own --option settings if any: "haq (warmup=5)"
    runs: list[dict]
    mean: dict = field(default_factory=dict)
    std: dict = field(default_factory=dict)  # None where fewer than two seeds succeeded
    notes: list[str] = field(default_factory=list)
    flagged: bool = False  # over budget or another base model: shown, not ranked
    rank: int | None = None

    @property
    def ok(self) -> list[dict]:
        return [r for r in self.runs if r["status"] == "ok"]

    @property
    def rankable(self) -> bool:
        return self.method != REFERENCE and bool(self.ok) and not self.flagged


@dataclass
class Table:
    protocol: str  # "" when the benchmark has one protocol, else "A", "B", ...
    sigma: float
    budget: float | None  # None: a sigma with only the fp32 row
    rows: list[Row]


@dataclass
class Board:
    """Everything rendered for one benchmark."""

    benchmark: str
    protocols: dict[str, dict]  # label -> settings
    tables: list[Table]
    runs: list[dict]
    radii: list[str]

    def sigmas(self):
        """(protocol, sigma, its tables) in section order."""
        keys = sorted({(t.protocol, t.sigma) for t in self.tables})
        for protocol, sigma in keys:
            yield protocol, sigma, [t for t in self.tables if (t.protocol, t.sigma) == (protocol, sigma)]

    def plot_name(self, protocol: str, sigma: float) -> str:
        return f"{self.benchmark}-sigma{sigma:g}" + (f"-{protocol}" if protocol else "") + ".png"


def render(results: list[dict], out_dir: Path, fmt: str = "markdown", source: Path | None = None) -> list[Path]:
    """Write the leaderboard of every benchmark in ``results`` into ``out_dir``; returns the paths written.

    ``source``: the results directory, named in the markdown's header.
    """
    if fmt not in FORMATS:
        raise ArqbenchError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    if not results:
        raise ArqbenchError("no results to rank; run `arqbench run` first or point --results at a results dir")
    out_dir = Path(out_dir)
    runs = [flatten(r) for r in results]
    boards = [board(name, [r for r in runs if r["benchmark"] == name])
              for name in sorted({r["benchmark"] for r in runs})]
    written = []
    for b in boards:
        path = out_dir / f"{b.benchmark}.{FORMATS[fmt]}"
        if fmt == "csv":
            table = pd.DataFrame(records(b, out_dir))
            table["rank"] = table["rank"].astype("Int64")  # blank, not NaN-as-float, for unranked rows
            write_text_atomic(path, table.to_csv(index=False))
        elif fmt == "json":
            write_json_atomic(path, {"benchmark": b.benchmark, "protocols": b.protocols,
                                     "rows": records(b, out_dir, runs=True)})
        else:
            for protocol, sigma, tables in b.sigmas():
                png = plot(b, protocol, sigma, tables)
                if png is not None:
                    write_bytes_atomic(out_dir / b.plot_name(protocol, sigma), png)
                    written.append(out_dir / b.plot_name(protocol, sigma))
            write_text_atomic(path, markdown(b, out_dir, source))
        written.insert(0, path)
    return written


# --- from result files to tables ---------------------------------------------------------------------------


def flatten(result: dict) -> dict:
    """One result file as a flat record: identity, protocol, and (when it succeeded) its numbers."""
    protocol = dict((result.get("config") or {}).get("protocol") or {})
    own = (protocol.pop("options", None) or {}).get(result["method"]) or {}
    method = result["method"] + (f" ({', '.join(f'{k}={v}' for k, v in sorted(own.items()))})" if own else "")
    versions = result.get("versions") or {}
    command = result.get("command")
    run = {"benchmark": result["benchmark"], "method": method, "sigma": float(result["sigma"]),
           "budget": None if result.get("budget") is None else float(result["budget"]), "seed": result.get("seed"),
           "status": result["status"], "error": result.get("error"), "path": result.get("path"),
           "settings": protocol, "protocol": json.dumps(protocol, sort_keys=True),
           "base": (result.get("base_model") or {}).get("fingerprint"),
           "command": " ".join(map(str, command)) if isinstance(command, list) else command,
           "software": ", ".join(f"{k} {versions[k]}" for k in ("arqbench", "torch", "device") if versions.get(k)),
           "values": {}}
    if result["status"] == "ok":
        try:
            m, c = result["metrics"], result["cost"]
            run["values"] = {
                "bitops_pct": 100 * c["bitops_fraction"], "size_kib": c["size_bits"] / 8 / 1024,
                "clean_acc": m["clean_acc"], "smoothed_acc": m["smoothed_acc"],
                **{f"cert@{radius}": value for radius, value in m["certified_acc"].items()},
                "acr": m["acr"], "abstain_rate": m["abstain_rate"],
                "search_s": None if result["method"] == REFERENCE else (result.get("timing") or {}).get("search_s"),
            }
            run["cost_pct"] = 100 * c.get("fraction", c["bitops_fraction"])
            run["cost_model"] = c.get("cost_model", "bitops")
            run["within_budget"] = c.get("within_budget", True)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ArqbenchError(f"result file {result.get('path')} lacks {exc} of a finished cell; "
                                f"re-run that cell with --force") from None
    return run


def board(benchmark: str, runs: list[dict]) -> Board:
    labels = protocol_labels(runs)
    placed = []  # (protocol label, run); an fp32 run once per protocol it joins
    for run in runs:
        placed += [(label, run) for label in labels[run["protocol"]]]
    _refuse_duplicates(placed)
    radii = sorted({k[5:] for r in runs for k in r["values"] if k.startswith("cert@")}, key=float)
    tables = []
    for protocol, sigma in sorted({(label, run["sigma"]) for label, run in placed}):
        here = [run for label, run in placed if (label, run["sigma"]) == (protocol, sigma)]
        reference = [r for r in here if r["method"] == REFERENCE]
        budgets = sorted({r["budget"] for r in here if r["method"] != REFERENCE and r["budget"] is not None})
        base = _expected_base(here)
        for budget in budgets or [None]:
            cell = reference + [r for r in here if r["method"] != REFERENCE and r["budget"] == budget]
            tables.append(Table(protocol, sigma, budget, rank(aggregate(cell, base, budget))))
    settings = {}
    for key, names in labels.items():
        for label in names:
            settings.setdefault(label, json.loads(key))
    return Board(benchmark, dict(sorted(settings.items())), tables, runs, radii)


def protocol_labels(runs: list[dict]) -> dict[str, list[str]]:
    """Each distinct protocol key -> the labels of the protocols it belongs to ("" when there is one).

    Quantized runs define the protocols (most results first); an fp32 run belongs to every protocol
    whose settings include its certification settings, or to a protocol of its own.
    """
    counts = Counter(r["protocol"] for r in runs if r["method"] != REFERENCE)
    keys = sorted(counts, key=lambda k: (-counts[k], k))
    joins = {}
    for run in runs:
        if run["method"] == REFERENCE and run["protocol"] not in joins:
            s = run["settings"]
            joins[run["protocol"]] = [k for k in keys if s and all(json.loads(k).get(n) == v for n, v in s.items())]
    keys += sorted(k for k, joined in joins.items() if not joined and k not in counts)
    name = {k: "" if len(keys) == 1 else (chr(ord("A") + i) if i < 26 else f"P{i + 1}") for i, k in enumerate(keys)}
    labels = {k: [name[k]] for k in keys}
    labels.update({k: [name[j] for j in joined] for k, joined in joins.items() if joined})
    return labels


def _refuse_duplicates(placed: list[tuple[str, dict]]) -> None:
    seen = {}
    for label, run in placed:
        key = (label, run["sigma"], run["budget"], run["method"], run["seed"])
        if key in seen and seen[key]["path"] != run["path"]:
            raise ArqbenchError(
                f"{seen[key]['path']} and {run['path']} are the same cell ({run['method']} sigma={run['sigma']:g} "
                f"budget={run['budget']} seed={run['seed']}) under the same protocol; "
                f"keep one of them out of --results")
        seen[key] = run


def _expected_base(runs: list[dict]) -> set:
    """The base model(s) rows must share: the fp32 rows', else the most common one among the results."""
    reference = {r["base"] for r in runs if r["method"] == REFERENCE and r["base"]}
    if reference:
        return reference
    common = Counter(r["base"] for r in runs if r["status"] == "ok" and r["base"]).most_common(1)
    return {common[0][0]} if common else set()


def aggregate(runs: list[dict], base: set, budget: float | None) -> list[Row]:
    rows = []
    for method in dict.fromkeys(r["method"] for r in runs):
        mine = [r for r in runs if r["method"] == method]
        row = Row(method, sorted(mine, key=lambda r: (r["seed"] is None, r["seed"])))
        keys = dict.fromkeys(k for r in row.ok for k in r["values"])
        for key in keys:
            values = [r["values"][key] for r in row.ok if r["values"].get(key) is not None]
            values = [v for v in values if not math.isnan(v)]
            row.mean[key] = sum(values) / len(values) if values else None
            row.std[key] = statistics.stdev(values) if len(values) > 1 else None
        failed = [r for r in row.runs if r["status"] != "ok"]
        if failed:
            errors = "; ".join(dict.fromkeys(str(r["error"]) for r in failed))
            row.notes.append(f"failed: {errors}" if not row.ok
                             else f"seed {', '.join(str(r['seed']) for r in failed)} failed: {errors}")
        over = [r for r in row.ok if r["method"] != REFERENCE and not r["within_budget"]]
        if over:
            row.flagged = True
            where = ", ".join(f"seed {r['seed']} at {r['cost_pct']:.2f}%" for r in over)
            row.notes.append(f"over budget ({where} of float {_cost_name(over[0]['cost_model'])}, budget "
                             f"{100 * budget:g}%)")
        other = sorted({r["base"] for r in row.ok if r["base"] and base and r["base"] not in base})
        if other and row.method != REFERENCE:
            row.flagged = True
            row.notes.append(f"other base model ({', '.join(other)}) than the fp32 row ({', '.join(sorted(base))})")
        rows.append(row)
    return rows


def rank(rows: list[Row]) -> list[Row]:
    """fp32 first; then rows by mean ACR (ties share a rank); then unranked rows with numbers; then failed ones."""
    ranked = sorted((r for r in rows if r.rankable), key=lambda r: (-_acr(r), r.method))
    for i, row in enumerate(ranked):
        row.rank = ranked[i - 1].rank if i and _acr(row) == _acr(ranked[i - 1]) else i + 1
    reference = [r for r in rows if r.method == REFERENCE]
    flagged = sorted((r for r in rows if r.method != REFERENCE and r.flagged and r.ok),
                     key=lambda r: (-_acr(r), r.method))
    failed = sorted((r for r in rows if r.method != REFERENCE and not r.ok), key=lambda r: r.method)
    return reference + ranked + flagged + failed


def _acr(row: Row) -> float:
    value = row.mean.get("acr")
    return -math.inf if value is None else round(value, 12)


def _cost_name(name: str) -> str:
    return COST_NAMES.get(name, name)


# --- markdown ----------------------------------------------------------------------------------------------


def columns(radii: list[str]) -> list[tuple[str, str, float, int]]:
    return HEAD + [(f"cert@{r}", f"Cert@{r} %", 100, 1) for r in radii] + TAIL


def markdown(b: Board, out_dir: Path, source: Path | None = None) -> str:
    cols = columns(b.radii)
    lines = [f"# arqbench leaderboard: {b.benchmark}", "", *header(b, out_dir, source)]
    for protocol, sigma, tables in b.sigmas():
        lines += [f"## sigma = {sigma:g}" + (f", protocol {protocol}" if protocol else ""), ""]
        if any(t.budget is not None for t in tables):
            lines += [f"![{b.benchmark}, sigma = {sigma:g}: ACR and smoothed accuracy against BitOPs]"
                      f"({quote(b.plot_name(protocol, sigma))})", ""]
        else:
            lines += ["Only the float model has results at this sigma.", ""]
        cost = _cost_name(b.protocols[protocol].get("cost_model", "bitops"))
        for t in tables:
            if t.budget is not None:
                lines += [f"### budget = {100 * t.budget:g}% of float {cost}", ""]
            lines += [markdown_table(t, cols, out_dir), ""]
    return "\n".join(lines)


def header(b: Board, out_dir: Path, source: Path | None) -> list[str]:
    files = len({r["path"] for r in b.runs})
    by = " `arqbench leaderboard`" if source is None else f" `arqbench leaderboard --results {source} --out {out_dir}`"
    lines = [
        f"Rendered by{by} from {files} result files; each row links its result files (one per seed), and "
        "`arqbench certify --policy <result file>` replays that row's policy, fine-tune and seed and checks "
        "its numbers.", "",
        "One table per noise level sigma and budget, ranked by ACR (average certified L2 radius); fp32 is the "
        "float base model. BitOPs % is of the float model's (32-bit weights and activations), size is the "
        "weights'; clean accuracy is the quantized base classifier's; smoothed accuracy, Cert@r (correct and "
        "certified at L2 radius r) and abstain rate come from Cohen et al.'s CERTIFY; search is the method's "
        "search wall time. Mean ± std (sample std) over seeds where several ran. Rows over budget or on "
        "another base model are marked and not ranked; failed seeds are marked.", ""]
    if len(b.protocols) == 1:
        lines += [f"Protocol: {describe(next(iter(b.protocols.values())))}.", ""]
    else:
        differ = {k for s in b.protocols.values() for k in s
                  if len({json.dumps(p.get(k)) for p in b.protocols.values()}) > 1}
        lines += ["Protocols (results under different settings are never ranked or averaged together; "
                  "the settings that differ are in bold):", ""]
        lines += [f"- **{label}**: {describe(s, differ)}" for label, s in b.protocols.items()] + [""]
    commands = sorted({r["command"] for r in b.runs if r["command"]})
    if commands:
        lines += ["Results produced by:", "", "```", *commands, "```", ""]
    software = sorted({r["software"] for r in b.runs if r["software"]})
    if software:
        lines += [f"Software: {'; '.join(software)}.", ""]
    return lines


def describe(settings: dict, bold: set = frozenset()) -> str:
    """The protocol settings in words, the known ones first."""
    words = {
        "n0": lambda v: f"n0 = {v}", "n": lambda v: f"n = {v}", "alpha": lambda v: f"alpha = {v:g}",
        "test_images": lambda v: f"{v} test images", "subset": lambda v: f"{v} certification subset",
        "certifier": lambda v: f"certifier {v}",
        "quantizer": lambda v: f"quantizer {v}", "cost_model": lambda v: f"cost model {v}",
        "finetune_epochs": lambda v: f"fine-tune {v} epochs", "episodes": lambda v: f"{v} search episodes",
        "np": lambda v: f"incremental samples n_p = {v:g} n",
        "search_activations": lambda v: "activation bits searched" if v else "activations at 8 bits",
        "keep_ends": lambda v: "first and last layer at 8 bits" if v else "first and last layer searched",
        "batch_size": lambda v: f"certification batch {v}",
    }
    parts = []
    for key in [k for k in words if k in settings] + sorted(k for k in settings if k not in words):
        text = words[key](settings[key]) if key in words else f"{key} = {settings[key]}"
        parts.append(f"**{text}**" if key in bold else text)
    return ", ".join(parts) if parts else "not recorded"


def markdown_table(t: Table, cols, out_dir: Path) -> str:
    headers = ["Rank", "Method"] + [heading for _, heading, _, _ in cols] + ["Results", "Note"]
    body = []
    for row in t.rows:
        body.append(["—" if row.rank is None else str(row.rank), _cell(row.method)]
                    + [number(row.mean.get(k), row.std.get(k), scale, digits) for k, _, scale, digits in cols]
                    + [" ".join(f"[{r['seed']}]({quote(link(r['path'], out_dir))})" for r in row.runs),
                       _cell("; ".join(row.notes))])
    align = ["right", "left"] + ["right"] * len(cols) + ["left", "left"]
    return tabulate(body, headers, tablefmt="pipe", colalign=align, disable_numparse=True)


def number(mean: float | None, std: float | None, scale: float = 1, digits: int = 3) -> str:
    if mean is None:
        return "—"
    return f"{mean * scale:.{digits}f}" + ("" if std is None else f" ± {std * scale:.{digits}f}")


def link(path: str | None, out_dir: Path) -> str:
    """A result file's path relative to the leaderboard's directory, with forward slashes."""
    if not path:
        return ""
    return Path(os.path.relpath(Path(path).absolute(), Path(out_dir).absolute())).as_posix()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --- csv / json --------------------------------------------------------------------------------------------


def records(b: Board, out_dir: Path, runs: bool = False) -> list[dict]:
    """One record per leaderboard row; the fp32 row once per (protocol, sigma), with no budget."""
    keys = [k for k, _, _, _ in columns(b.radii)]
    out, seen = [], set()
    for t in b.tables:
        for row in t.rows:
            budget = None if row.method == REFERENCE else t.budget
            if row.method == REFERENCE:
                if (t.protocol, t.sigma) in seen:
                    continue
                seen.add((t.protocol, t.sigma))
            record = {"benchmark": b.benchmark, "protocol": t.protocol, "sigma": t.sigma, "budget": budget,
                      "rank": row.rank, "method": row.method, "seeds": " ".join(str(r["seed"]) for r in row.runs),
                      "ok_seeds": len(row.ok)}
            for key in keys:
                record[f"{key}_mean"], record[f"{key}_std"] = row.mean.get(key), row.std.get(key)
            record["note"] = "; ".join(row.notes)
            record["results"] = " ".join(link(r["path"], out_dir) for r in row.runs)
            if runs:
                record["runs"] = [{"seed": r["seed"], "status": r["status"], "error": r["error"],
                                   "path": link(r["path"], out_dir), **r["values"]} for r in row.runs]
            out.append(record)
    return out


# --- plots -------------------------------------------------------------------------------------------------


def plot(b: Board, protocol: str, sigma: float, tables: list[Table]) -> bytes | None:
    """The Pareto plot of one sigma: every method across budgets (mean ± std over seeds), fp32 as a line."""
    from arqbench.report import pareto  # matplotlib: only when plotting

    tables = [t for t in tables if t.budget is not None]
    if not tables:
        return None
    methods = sorted({row.method for t in b.tables for row in t.rows if row.method != REFERENCE})
    series = {}
    for t in tables:
        for row in t.rows:
            if row.method != REFERENCE and row.mean.get("acr") is not None:
                series.setdefault(row.method, []).append(pareto.Point(
                    budget=t.budget, x=row.mean["bitops_pct"], x_err=row.std.get("bitops_pct"),
                    acr=row.mean["acr"], acr_err=row.std.get("acr"), acc=100 * row.mean["smoothed_acc"],
                    acc_err=None if row.std.get("smoothed_acc") is None else 100 * row.std["smoothed_acc"],
                    flagged=row.flagged))
    reference = next((row for row in tables[0].rows if row.method == REFERENCE and row.ok), None)
    if reference is not None:
        reference = pareto.Point(
            budget=None, x=100.0, x_err=None, acr=reference.mean["acr"], acr_err=reference.std.get("acr"),
            acc=100 * reference.mean["smoothed_acc"],
            acc_err=None if reference.std.get("smoothed_acc") is None else 100 * reference.std["smoothed_acc"],
            flagged=False)
    title = f"{b.benchmark}, sigma = {sigma:g}" + (f", protocol {protocol}" if protocol else "")
    return pareto.png(title, [(m, methods.index(m), series[m]) for m in methods if m in series], reference,
                      sorted(100 * t.budget for t in tables))
