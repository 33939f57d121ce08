"""What ``arqbench leaderboard`` writes beside a markdown leaderboard to show inside the searches.

Every figure has its numbers in a tidy CSV of the same name beside it, built from the result files alone
(``method``: the search; ``label``: it with its own options, as the leaderboard's rows name it):

- ``<benchmark>-sigma<s>[-<protocol>]-bits.{png,csv}``: every method's weight/activation bits per layer (one
  CSV row per result file and layer, with the layer's MACs, weights and share of the float model's cost),
  one panel per budget;
- ``<benchmark>-sigma<s>[-<protocol>]-budget<b>-learning.{png,csv}``, for searches that record a
  ``history`` of scored candidates (HAQ, ARQ): every candidate (episode, policy as JSON, cost, reward, best
  reward so far, the ACR / smoothed accuracy / accuracy the search measured where it did, whether it is on
  the Pareto front of cost against search ACR of its run, whether it is the shipped policy, and the shipped
  policy's final ACR; for a search that re-scored its top candidates, ``rescored`` marks them and ``rescore``
  gives their re-score);
- ``<benchmark>-sigma<s>[-<protocol>]-sensitivity.{png,csv}``, for searches that record a per-layer
  sensitivity ``profile`` (rows of ``arqbench.search.sensitivity``; ``robust-ilp`` does): the profile of
  each seed's base model, as a layers-by-bits heatmap (mean over seeds). With several such methods, one
  file each, ``...-sensitivity-<method>.{png,csv}``.

Files of these kinds that a new rendering no longer produces are deleted, so the folder always matches the
results. Only the markdown format writes them; ``render`` returns their paths and the markdown that links them,
appended to the leaderboard after a rule (bold lines, not headings: the leaderboard's sections stay its own).
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from arqbench.files import glob_escape, write_bytes_atomic, write_text_atomic
from arqbench.pipeline.results import REFERENCE
from arqbench.report import figures
from arqbench.report.layers import float_cost_shares, layers_of, network_order

KINDS = ("bits", "learning", "sensitivity")


@dataclass
class Inside:
    paths: list[Path] = field(default_factory=list)
    markdown: str = ""


def render(board, results: list[dict], out_dir: Path) -> Inside:
    """Write the figures and CSVs of one benchmark's ``board`` (``arqbench.report.leaderboard.Board``), built
    from ``results`` (the raw result files, each with its ``path``), into ``out_dir``; prune stale ones."""
    out_dir = Path(out_dir)
    raw = {r.get("path"): r for r in results}
    colours = {m: i for i, m in enumerate(sorted({row.method for t in board.tables for row in t.rows
                                                   if row.method != REFERENCE}))}
    inside, lines = Inside(), []
    for protocol, sigma, tables in board.sigmas():
        cells = [(t.budget, row.method, raw[run["path"]]) for t in tables if t.budget is not None
                 for row in t.rows if row.method != REFERENCE for run in row.ok if run["path"] in raw]
        if not cells:
            continue
        where = f"{board.benchmark}, sigma = {sigma:g}" + (f", protocol {protocol}" if protocol else "")
        section = []
        bits = bits_frame(cells)
        if len(bits):
            stem = _stem(board.benchmark, sigma, None, protocol, "bits")
            section += _write(inside, out_dir, stem, bits, figures.bits_png(f"{where}: bits per layer", bits, colours),
                              "bits per layer; grey: each layer's share of the float cost")
        for budget in sorted({b for b, _, _ in cells}):
            candidates = candidates_frame([c for c in cells if c[0] == budget])
            if len(candidates):
                stem = _stem(board.benchmark, sigma, budget, protocol, "learning")
                png = figures.learning_png(f"{where}, budget {100 * budget:g}%: searches", candidates, colours)
                section += _write(inside, out_dir, stem, candidates, png,
                                  f"budget {100 * budget:g}%: learning curves and every scored candidate")
        profiles = profile_frame(cells)
        labels = list(dict.fromkeys(profiles["label"])) if len(profiles) else []
        for method in labels:
            kind = "sensitivity" if len(labels) == 1 else f"sensitivity-{_slug(method)}"
            mine = profiles[profiles["label"] == method]
            png = figures.heatmap_png(f"{where}: per-layer sensitivity ({method})", mine)
            section += _write(inside, out_dir, _stem(board.benchmark, sigma, None, protocol, kind), mine, png,
                              f"per-layer robustness sensitivity ({method})")
        if section:
            lines += [f"**sigma = {sigma:g}" + (f", protocol {protocol}" if protocol else "") + "**", "", *section]
    _prune(out_dir, board.benchmark, set(inside.paths))
    if lines:
        inside.markdown = "\n".join([
            "", "---", "",
            "**Inside the searches.** Where each method put its bits, how the learning searches progressed, and the "
            "per-layer sensitivity a search measured, drawn from the result files; the numbers of every figure are in "
            "the CSV beside it. `arqbench show <result file or budget folder>` prints one cell layer by layer.",
            "", *lines])
    return inside


def _stem(benchmark: str, sigma: float, budget: float | None, protocol: str, kind: str) -> str:
    return (f"{benchmark}-sigma{sigma:g}" + (f"-{protocol}" if protocol else "")
            + ("" if budget is None else f"-budget{budget:g}") + f"-{kind}")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_")


def _write(inside: Inside, out_dir: Path, stem: str, frame: pd.DataFrame, png: bytes, caption: str) -> list[str]:
    csv, image = out_dir / f"{stem}.csv", out_dir / f"{stem}.png"
    write_text_atomic(csv, frame.to_csv(index=False))
    write_bytes_atomic(image, png)
    inside.paths += [image, csv]
    return [f"![{caption}]({quote(image.name)})", "", f"{caption.capitalize()}: [data]({quote(csv.name)}).", ""]


def _prune(out_dir: Path, benchmark: str, keep: set[Path]) -> None:
    if not out_dir.is_dir():
        return
    for kind in KINDS:
        for ext in ("png", "csv"):
            for path in out_dir.glob(f"{glob_escape(benchmark)}-sigma*-{kind}*.{ext}"):
                if path not in keep:
                    path.unlink(missing_ok=True)


# --- tidy tables from result files ------------------------------------------------------------------------


def bits_frame(cells: list[tuple[float, str, dict]]) -> pd.DataFrame:
    """One row per (result file, layer): budget, method, seed, the layer, its float cost share and its bits."""
    rows = []
    for budget, label, result in cells:
        policy = result.get("policy") or {}
        layers = layers_of(result)
        info = {l.name: l for l in layers or []}
        cost_model = (result.get("cost") or {}).get("cost_model") or "bitops"
        shares = float_cost_shares(layers, cost_model) if layers else {}
        for i, name in enumerate(network_order(result, layers)):
            layer = info.get(name)
            w, a = policy.get(name, (None, None))
            rows.append({"budget": budget, "method": result["method"], "label": label, "seed": result.get("seed"),
                         "layer": name,
                         "index": layer.index if layer else i, "kind": layer.kind if layer else None,
                         "macs": layer.macs if layer else None, "params": layer.params if layer else None,
                         "cost_model": cost_model, "float_cost_share": shares.get(name), "w_bits": w, "a_bits": a,
                         "path": result.get("path")})
    return pd.DataFrame(rows)


def candidates_frame(cells: list[tuple[float, str, dict]]) -> pd.DataFrame:
    """Every candidate each search scored (its ``history``), with the front and the shipped policy marked."""
    rows = []
    for budget, label, result in cells:
        search = result.get("search") or {}
        history = [h for h in search.get("history") or [] if isinstance(h, dict) and "reward" in h]
        if not history:
            continue
        shipped = search.get("best_episode")
        if shipped is None:
            shipped = next((h["episode"] for h in history if h["policy"] == result.get("policy")), None)
        rescores = {r["episode"]: r["rescore"] for r in search.get("rescored") or []
                    if isinstance(r, dict) and "rescore" in r}
        best, distinct = float("-inf"), 0
        run = []
        for h in history:
            best = max(best, h["reward"])
            distinct += not h.get("revisit", False)
            run.append({"budget": budget, "method": result["method"], "label": label, "seed": result.get("seed"),
                        "episode": h["episode"],
                        "revisit": bool(h.get("revisit", False)), "cost": h.get("cost"), "reward": h["reward"],
                        "best_reward": best, "distinct": distinct, "search_acr": h.get("acr"), "search_smoothed_acc": h.get("smoothed_acc"),
                        "search_accuracy": h.get("accuracy"), "pareto": False, "shipped": h["episode"] == shipped,
                        "final_acr": (result.get("metrics") or {}).get("acr") if h["episode"] == shipped else None,
                        "rescored": h["episode"] in rescores, "rescore": rescores.get(h["episode"]),
                        "policy": json.dumps(h.get("policy"), separators=(",", ":")),
                        "path": result.get("path")})
        _mark_front(run)
        rows += run
    return pd.DataFrame(rows)


def _mark_front(run: list[dict]) -> None:
    """The Pareto front (least cost, most search ACR) of a run's distinct scored candidates."""
    scored = sorted((r for r in run if not r["revisit"] and r["search_acr"] is not None and r["cost"] is not None),
                    key=lambda r: (r["cost"], -r["search_acr"]))
    best = float("-inf")
    for r in scored:
        if r["search_acr"] > best:
            r["pareto"], best = True, r["search_acr"]


def profile_frame(cells: list[tuple[float, str, dict]]) -> pd.DataFrame:
    """The sensitivity profiles searches recorded, once per (method, seed): a profile does not depend on the
    budget."""
    rows, seen = [], set()
    for budget, label, result in cells:
        profile = (result.get("search") or {}).get("profile")
        seed = result.get("seed")
        if not isinstance(profile, list) or (label, seed) in seen:
            continue
        seen.add((label, seed))
        metric = (result.get("search") or {}).get("metric")
        rows += [{"method": result["method"], "label": label, "seed": seed, "metric": metric, **row} for row in profile]
    columns = ["method", "label", "seed", "metric", "layer", "index", "kind", "w_bits", "a_bits", "acr", "smoothed_acc",
               "clean_acc", "disagreement", "acr_drop", "smoothed_acc_drop", "clean_acc_drop"]
    frame = pd.DataFrame(rows)
    return frame.reindex(columns=columns + [c for c in frame.columns if c not in columns]) if rows else frame
