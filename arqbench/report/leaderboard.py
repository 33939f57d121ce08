"""Leaderboards: per benchmark, one table per (sigma, budget), fp32 on top, ranks that respect sampling error.

How rows, intervals and ranks are computed is ``arqbench.report.tables``. Formats (``--format``), one
file per benchmark in the output directory (by default the results directory itself: result files are
read only from ``<benchmark>/sigma*/`` below it, so nothing written here is read back as a result):

- ``markdown``: ``<benchmark>.md``, at most ~11 columns a table, and beside it, per sigma (and protocol),
  the Pareto plot ``<benchmark>-sigma<sigma>[-<protocol>].png``, with the data of every figure in a CSV of
  the same name. Figures of tables that no longer exist are removed.
- ``csv``: ``<benchmark>.csv``, one row per leaderboard row: ``<metric>_mean`` and ``<metric>_std`` in the
  result files' units (fractions; ``*_pct`` in percent), ``acr_low``/``acr_high`` (95% interval over
  images), ``vs_above_*`` (the paired interval of the ACR difference to the row above, unadjusted), rank,
  tied, group (the letters), note, seeds, and the result files, relative to the csv. Beside it
  ``<benchmark>-pairs.csv``, one row per pair of ranked rows of a table (``pair_records``): the two
  methods, the mean ACR difference (upper minus lower row) with its paired 95% interval, the paired
  t-test's p, the Holm-adjusted p, and whether the pair differs significantly.
- ``json``: ``<benchmark>.leaderboard.json``: the protocols' settings, the csv's rows, each with ``runs``
  (one entry per result file: seed, status, error, path, its own numbers), and ``pairs``, the pairs csv's
  rows.
- ``latex``: ``<benchmark>.tex``, one booktabs table per (sigma, budget), for a paper.
"""

import json
import os
from pathlib import Path
from urllib.parse import quote

import pandas as pd
from tabulate import tabulate

from arqbench.errors import ArqbenchError
from arqbench.files import write_bytes_atomic, write_json_atomic, write_text_atomic
from arqbench.models import published
from arqbench.models.finetune_recipe import DEFAULT as DEFAULT_FINETUNE_RECIPE
from arqbench.pipeline.results import REFERENCE
from arqbench.report.tables import Board, Row, Table, boards, cost_name

FORMATS = {"markdown": ".md", "csv": ".csv", "json": ".leaderboard.json", "latex": ".tex"}


def render(results: list[dict], out_dir: Path, fmt: str = "markdown", source: Path | None = None) -> list[Path]:
    """Write the leaderboard of every benchmark in ``results`` into ``out_dir``; returns the paths written.

    ``source``: the results directory, named in the markdown's header.
    """
    if fmt not in FORMATS:
        raise ArqbenchError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    if not results:
        raise ArqbenchError("no results to rank; run `arqbench run` first or point --results at a results dir")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ArqbenchError(f"--out {out_dir} is a file; pass a directory for the leaderboard")
    written = []
    for b in boards(results):
        path = out_dir / f"{b.benchmark}{FORMATS[fmt]}"
        if fmt == "csv":
            write_text_atomic(path, frame(b, out_dir).to_csv(index=False))
            pairs = out_dir / f"{b.benchmark}-pairs.csv"
            write_text_atomic(pairs, pairs_frame(b).to_csv(index=False))
            written.append(pairs)
        elif fmt == "json":
            write_json_atomic(path, {"benchmark": b.benchmark, "protocols": b.protocols,
                                     "rows": records(b, out_dir, runs=True), "pairs": pair_records(b)})
        elif fmt == "latex":
            write_text_atomic(path, latex(b))
        else:
            # bits per layer, learning curves, sensitivity (matplotlib: only when plotting)
            from arqbench.report import inside

            figures = write_figures(b, out_dir)
            more = inside.render(b, results, out_dir)
            write_text_atomic(path, markdown(b, out_dir, source) + more.markdown)
            prune(b, out_dir, figures + more.paths)
            written += figures + more.paths
        written.insert(0, path)
    if fmt == "markdown":  # the base models the rows were computed from ship beside them (models.published)
        written += published.publish(results, out_dir)
    return written


# --- markdown ----------------------------------------------------------------------------------------------


def columns(b: Board, protocol: str, sigma: float) -> list[tuple[str, str, float, int]]:
    """(key, heading, scale, digits) of a table's number columns."""
    cost = b.cost_model(protocol)
    return ([(f"{cost}_pct", f"{cost_name(cost)} %", 1, 2), ("clean_acc", "Clean acc %", 100, 1),
             ("smoothed_acc", "Smoothed acc %", 100, 1)]
            + [(f"cert@{r}", f"Cert@{r} %", 100, 1) for r in b.shown_radii(protocol, sigma)]
            + [("acr", "ACR [95% CI]", 1, 3), ("group", "Group", 1, 0)]
            + ([("holds", "Holds on", 1, 0)] if any(row.holds for t in b.tables if (t.protocol, t.sigma) ==
                                                    (protocol, sigma) for row in t.rows) else [])
            + [("search_cost_s", "Search (s)", 1, 1)])


def markdown(b: Board, out_dir: Path, source: Path | None = None) -> str:
    lines = [f"# arqbench leaderboard: {b.benchmark}", "", *header(b, out_dir, source)]
    for protocol, sigma, tables in b.sigmas():
        lines += [f"## sigma = {sigma:g}" + (f", protocol {protocol}" if protocol else ""), ""]
        cap = b.radius_cap(protocol, sigma)
        settings = b.protocols[protocol]
        lines += [f"Certified accuracy is shown only up to the largest radius this protocol can certify, "
                  f"sigma * Phi^-1(alpha^(1/n)) = {cap:.3f} (n = {settings.get('n')}, alpha = "
                  f"{settings.get('alpha')}); every radius is in the csv/json.", ""]
        for name, what in figure_names(b, protocol, sigma).items():
            lines += [f"![{b.benchmark}, sigma = {sigma:g}: {what}]({quote(name)})", ""]
        if not any(t.budget is not None for t in tables):
            lines += ["Only the float model has results at this sigma.", ""]
        for t in tables:
            if t.budget is not None:
                lines += [f"### budget = {100 * t.budget:g}% of float {cost_name(b.cost_model(protocol))}", ""]
                if any(row.ok for row in t.rows):
                    lines += [f"Certified accuracy against radius: [{curve_name(b, t)}]({quote(curve_name(b, t))})", ""]
            lines += [markdown_table(b, t), ""]
            notes = [f"- {row.method}: {'; '.join(row.notes)}" for row in t.rows if row.notes]
            where = sorted({str(Path(link(r["path"], out_dir)).parent) for row in t.rows for r in row.runs
                            if r["path"]})
            lines += notes + ([""] if notes else [])
            lines += [f"Result files: {', '.join(f'[{w}/]({quote(w)}/)' for w in where)}", ""] if where else []
    return "\n".join(lines)


def header(b: Board, out_dir: Path, source: Path | None) -> list[str]:
    files = len({r["path"] for r in b.runs})
    by = " `arqbench leaderboard`" if source is None else f" `arqbench leaderboard --results {source} --out {out_dir}`"
    lines = [
        f"Rendered by{by} from {files} result files (each row's files are in the csv/json export, and "
        "`arqbench certify --policy <result file>` replays a row's policy, fine-tune and seed and checks its "
        "numbers).", "",
        "One table per noise level sigma and budget; fp32 is the float base model. Cost is a percentage of the "
        "float model's (32-bit weights and activations); clean accuracy is the quantized base classifier's; "
        "smoothed accuracy and Cert@r (correct and certified at L2 radius r) come from Cohen et al.'s CERTIFY "
        "on the same test images with the same noise for every row; search (s) is the search's own work plus "
        "each cached item it reused counted once, at what it took when measured; lock waits excluded (the "
        "csv/json have the parts: search_s own, search_reused_s, search_wait_s; search_cost_s their sum). "
        "Numbers are means over seeds. ACR (average certified radius) "
        "carries its 95% Student-t interval over the test images (each image's radius averaged over the "
        "seeds). Ranks compare every pair of rows in a table paired, image by image (paired t-test of the "
        "per-image radii, Holm's correction over the table's pairs, at 5%): a row's rank is 1 + the number of "
        "rows significantly better than it (`k=` when rows share it), and rows sharing a letter in Group do "
        "not differ significantly (compact letter display); every pair's difference, interval and p-values "
        "are in the csv/json. Where a table's seeds quantize different base models (each seed s its own "
        "network, trained with seed s), Holds on says on how many of them a row's ACR is at least the next "
        "row's: k/k is an order that survives retraining the network; less is an order of some networks only. "
        "Rows over budget or on another base model are noted and not ranked; failed "
        "seeds are noted.", ""]
    if len(b.protocols) == 1:
        lines += [f"Protocol: {describe(next(iter(b.protocols.values())))}.", ""]
    else:
        differ = {k for s in b.protocols.values() for k in s
                  if len({json.dumps(p.get(k), sort_keys=True) for p in b.protocols.values()}) > 1}
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
        "finetune_epochs": lambda v: f"fine-tune {v} epochs",
        "finetune_recipe": lambda v: "fine-tune recipe " + ", ".join(f"{k}={x}" for k, x in sorted(v.items())),
        "search_activations": lambda v: "activation bits searched" if v else "activations at 8 bits",
        "keep_ends": lambda v: "first and last layer at 8 bits" if v else "first and last layer searched",
        "batch_size": lambda v: f"certification batch {v}",
        "base_seeds": lambda v: ("seed s quantizes base model s (trained with seed s)" if v == "per-seed"
                                 else "every seed quantizes base model 0"),
        "options": lambda v: "plugin options " + "; ".join(
            f"{'every plugin' if name == '*' else name}: {', '.join(f'{k}={x}' for k, x in sorted(o.items()))}"
            for name, o in sorted(v.items())),
    }
    if settings.get("finetune_recipe") == DEFAULT_FINETUNE_RECIPE:  # the recipe every result had before it was recorded
        settings = {k: v for k, v in settings.items() if k != "finetune_recipe"}
    parts = []
    for key in [k for k in words if k in settings] + sorted(k for k in settings if k not in words):
        text = words[key](settings[key]) if key in words else f"{key} = {settings[key]}"
        parts.append(f"**{text}**" if key in bold else text)
    return ", ".join(parts) if parts else "not recorded"


def markdown_table(b: Board, t: Table) -> str:
    cols = columns(b, t.protocol, t.sigma)
    headers = ["Rank", "Method"] + [heading for _, heading, _, _ in cols]
    body = [[row.rank_label, _cell(row.method)] + [value(row, k, scale, digits) for k, _, scale, digits in cols]
            for row in t.rows]
    align = ["right", "left"] + ["left" if k == "group" else "right" for k, _, _, _ in cols]
    return tabulate(body, headers, tablefmt="pipe", colalign=align, disable_numparse=True)


def value(row: Row, key: str, scale: float = 1, digits: int = 3) -> str:
    if key == "group":
        return row.letters or "—"
    if key == "holds":
        return "—" if row.holds is None else f"{row.holds[0]}/{row.holds[1]}"
    mean = row.mean.get(key)
    if mean is None:
        return "—"
    if key == "acr" and row.acr is not None:
        return f"{row.acr.mean:.{digits}f} [{row.acr.low:.{digits}f}, {row.acr.high:.{digits}f}]"
    return f"{mean * scale:.{digits}f}"


def link(path: str | None, out_dir: Path) -> str:
    """A result file's path relative to the leaderboard's directory, with forward slashes."""
    if not path:
        return ""
    return Path(os.path.relpath(Path(path).absolute(), Path(out_dir).absolute())).as_posix()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --- csv / json / latex ------------------------------------------------------------------------------------


def records(b: Board, out_dir: Path, runs: bool = False) -> list[dict]:
    """One record per leaderboard row; the fp32 row once per (protocol, sigma), with no budget."""
    keys = list(dict.fromkeys(k for r in b.runs for k in r["values"]))
    out, seen = [], set()
    for t in b.tables:
        for row in t.rows:
            budget = None if row.method == REFERENCE else t.budget
            if row.method == REFERENCE:
                if (t.protocol, t.sigma) in seen:
                    continue
                seen.add((t.protocol, t.sigma))
            record = {"benchmark": b.benchmark, "protocol": t.protocol, "sigma": t.sigma, "budget": budget,
                      "rank": row.rank, "tied": row.tied, "group": row.letters or None, "method": row.method,
                      "seeds": " ".join(str(r["seed"]) for r in row.runs), "ok_seeds": len(row.ok),
                      "radius_cap": b.radius_cap(t.protocol, t.sigma)}
            for key in keys:
                record[f"{key}_mean"], record[f"{key}_std"] = row.mean.get(key), row.std.get(key)
            record["acr_low"], record["acr_high"] = (row.acr.low, row.acr.high) if row.acr else (None, None)
            record["images"] = row.acr.n if row.acr else None
            above = row.vs_above
            record["vs_above_mean"], record["vs_above_low"], record["vs_above_high"] = (
                (above.mean, above.low, above.high) if above else (None, None, None))
            record["holds_on"], record["base_models"] = row.holds or (None, None)
            record["note"] = "; ".join(row.notes)
            record["results"] = " ".join(link(r["path"], out_dir) for r in row.runs)
            if runs:
                record["runs"] = [{"seed": r["seed"], "status": r["status"], "error": r["error"],
                                   "path": link(r["path"], out_dir), **r["values"]} for r in row.runs]
            out.append(record)
    return out


def pair_records(b: Board) -> list[dict]:
    """One record per pair of ranked rows of every table, the upper row first (``tables.rank``)."""
    return [{"benchmark": b.benchmark, "protocol": t.protocol, "sigma": t.sigma, "budget": t.budget,
             "method_a": p.a, "method_b": p.b, "acr_difference": p.difference.mean,
             "difference_low": p.difference.low, "difference_high": p.difference.high, "images": p.difference.n,
             "p": p.p, "p_holm": p.p_holm, "significant": p.significant}
            for t in b.tables for p in t.pairs]


def pairs_frame(b: Board) -> pd.DataFrame:
    return pd.DataFrame(pair_records(b), columns=["benchmark", "protocol", "sigma", "budget", "method_a", "method_b",
                                                  "acr_difference", "difference_low", "difference_high", "images",
                                                  "p", "p_holm", "significant"])


def frame(b: Board, out_dir: Path) -> pd.DataFrame:
    table = pd.DataFrame(records(b, out_dir))
    table["rank"] = table["rank"].astype("Int64")  # blank, not NaN-as-float, for unranked rows
    return table


def latex(b: Board) -> str:
    """One booktabs table per (protocol, sigma, budget), the markdown table's columns."""
    parts = [f"% arqbench leaderboard: {b.benchmark} (requires \\usepackage{{booktabs}})"]
    for t in b.tables:
        cols = columns(b, t.protocol, t.sigma)
        body = [[row.rank_label, row.method] + [value(row, k, s, d) for k, _, s, d in cols] for row in t.rows]
        df = pd.DataFrame(body, columns=["Rank", "Method"] + [h.replace("%", r"\%") for _, h, _, _ in cols])
        where = f"$\\sigma = {t.sigma:g}$" + ("" if t.budget is None else
                                             f", budget {100 * t.budget:g}\\% of float {cost_name(b.cost_model(t.protocol))}")
        caption = f"{b.benchmark}, {where}" + (f", protocol {t.protocol}" if t.protocol else "")
        align = "rl" + "".join("l" if k == "group" else "r" for k, _, _, _ in cols)
        parts.append(df.to_latex(index=False, caption=caption, escape=False, column_format=align,
                                 label=f"tab:{b.benchmark}-{t.sigma:g}-{t.budget}"))
    return "\n".join(parts)


# --- figures -----------------------------------------------------------------------------------------------


def figure_names(b: Board, protocol: str, sigma: float) -> dict[str, str]:
    """File name -> what it shows, for the figures of one (protocol, sigma) section."""
    tables = [t for t in b.tables if (t.protocol, t.sigma) == (protocol, sigma) and t.budget is not None]
    return {f"{_stem(b, protocol, sigma)}.png": "ACR and smoothed accuracy against cost"} if tables else {}


def curve_name(b: Board, t: Table) -> str:
    """The certified-accuracy curve of one table (Cohen et al.'s standard figure)."""
    return f"{_stem(b, t.protocol, t.sigma)}-budget{t.budget:g}-curve.png"


def _stem(b: Board, protocol: str, sigma: float) -> str:
    return f"{b.benchmark}-sigma{sigma:g}" + (f"-{protocol}" if protocol else "")


def write_figures(b: Board, out_dir: Path) -> list[Path]:
    """Every figure of the board and the CSV of its data; returns the paths written."""
    written = []

    def write(name: str, png: bytes, data: str) -> None:
        write_bytes_atomic(out_dir / name, png)
        write_text_atomic(out_dir / name.replace(".png", ".csv"), data)
        written.extend([out_dir / name, out_dir / name.replace(".png", ".csv")])

    for protocol, sigma, tables in b.sigmas():
        for name in figure_names(b, protocol, sigma):
            png, data = pareto_figure(b, protocol, sigma, tables)
            write(name, png, data.to_csv(index=False))
        for t in tables:
            if t.budget is not None and any(row.ok for row in t.rows):
                write(curve_name(b, t), *curve_figure(b, t))
    return written


def curve_figure(b: Board, t: Table) -> tuple[bytes, str]:
    """Certified accuracy against radius for every row of a table, up to the radius the protocol can certify."""
    from arqbench.report import curves  # matplotlib: only when plotting

    radii = curves.grid(min(b.radius_cap(t.protocol, t.sigma), 4 * t.sigma))
    methods = sorted({row.method for tb in b.tables for row in tb.rows if row.method != REFERENCE})
    lines = [curves.Curve(row.method, None if row.method == REFERENCE else methods.index(row.method),
                          *curves.over_seeds([r["certificates"] for r in row.ok], radii))
             for row in t.rows if row.ok and all(r["certificates"] for r in row.ok)]
    title = (f"{b.benchmark}, sigma = {t.sigma:g}, budget {100 * t.budget:g}% of float "
             f"{cost_name(b.cost_model(t.protocol))}" + (f", protocol {t.protocol}" if t.protocol else ""))
    return curves.png(title, radii, lines), curves.csv(radii, lines)


def prune(b: Board, out_dir: Path, keep: list[Path]) -> None:
    """Remove this benchmark's figures (and their CSVs) that no table produced this time."""
    keep = {p.name for p in keep}
    for path in Path(out_dir).glob(f"{b.benchmark}-sigma*"):
        if path.suffix in (".png", ".csv") and path.name not in keep:
            path.unlink()


def pareto_figure(b: Board, protocol: str, sigma: float, tables: list[Table]) -> tuple[bytes, pd.DataFrame]:
    """The Pareto plot of one sigma: every method across budgets (mean ± std over seeds, ACR with its 95%
    interval), fp32 as a line; and its data."""
    from arqbench.report import pareto  # matplotlib: only when plotting

    cost = b.cost_model(protocol)
    key = f"{cost}_pct"
    tables = [t for t in tables if t.budget is not None]
    methods = sorted({row.method for t in b.tables for row in t.rows if row.method != REFERENCE})
    series, data = {}, []
    for t in tables:
        for row in t.rows:
            if row.method != REFERENCE and row.mean.get("acr") is not None:
                point = _point(row, key, t.budget)
                series.setdefault(row.method, []).append(point)
                data.append({"method": row.method, "budget": t.budget, **point.__dict__})
    reference = next((row for row in tables[0].rows if row.method == REFERENCE and row.ok), None)
    if reference is not None:
        reference = _point(reference, key, None, x=100.0)
        data.append({"method": REFERENCE, "budget": None, **reference.__dict__})
    title = f"{b.benchmark}, sigma = {sigma:g}" + (f", protocol {protocol}" if protocol else "")
    png = pareto.png(title, [(m, methods.index(m), series[m]) for m in methods if m in series], reference,
                     sorted(100 * t.budget for t in tables), cost_name(cost))
    return png, pd.DataFrame(data)


def _point(row: Row, key: str, budget, x: float | None = None):
    from arqbench.report import pareto

    acr_err = None
    if row.acr is not None:
        acr_err = (row.acr.mean - row.acr.low, row.acr.high - row.acr.mean)
    std_acc = row.std.get("smoothed_acc")
    return pareto.Point(budget=budget, x=row.mean.get(key, x) if x is None else x, x_err=row.std.get(key),
                        acr=row.mean["acr"], acr_err=acr_err, acc=100 * row.mean["smoothed_acc"],
                        acc_err=None if std_acc is None else 100 * std_acc, flagged=row.flagged)
