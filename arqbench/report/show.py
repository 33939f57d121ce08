"""``arqbench show``: one cell, or every method's cell of one (benchmark, sigma, budget, seed), layer by layer.

Given a result file (or a saved model, ``<method>-seed<n>.pt``: the result file beside it), or a folder of result
files (a budget folder of ``arqbench run --out``), the table has one
row per quantizable layer in network order (name, kind, MACs, weight count, share of the float model's cost
under the run's cost model) and one column per method with its weight/activation bits; the footer gives each
method's cost (% of float) and ACR with the half-width of its 95% interval over test images
(``arqbench.smoothing.intervals``). The fp32 result of the same (benchmark, sigma, seed), found beside the
budget folder, gives the title's reference ACR (and is the first method of the csv/json, at 32/32 bits).
``--format csv``: one row per (method, layer) (``label``: the method with its own options); ``--format json``:
the layers, then each method's policy and numbers.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich import box
from rich.table import Table

from arqbench.console import fitted, natural_width
from arqbench.errors import ArqbenchError
from arqbench.pipeline import saved
from arqbench.pipeline.results import REFERENCE, read
from arqbench.quantization.policy import FLOAT_BITS
from arqbench.report.layers import float_cost_shares, layers_of, network_order
from arqbench.smoothing.intervals import mean_interval, per_image

FORMATS = ("table", "csv", "json")


@dataclass
class Shown:
    benchmark: str
    sigma: float
    budget: float | None
    seed: int
    layers: list[dict]  # name, index, kind, macs, params, float_cost_share (None where unknown)
    methods: list[dict]  # method, path, policy {layer: [w, a]}, cost_fraction, cost_model, acr, acr_low, ...
    seeds: list[int]  # every seed found for this cell


def collect(path: Path, seed: int | None = None) -> Shown:
    """The cells to show: ``path`` is a result file or a folder of them; ``seed`` picks one of several."""
    path = Path(path)
    if path.is_dir():
        results = [dict(read(p), path=str(p)) for p in sorted(path.glob("*.json"))]
        quantized = [r for r in results if r["method"] != REFERENCE]
        if not quantized:
            budgets = sorted(p.name for p in path.iterdir() if p.is_dir())
            hint = f"; pass one budget folder, e.g. {path / budgets[0]}" if budgets else ""
            raise ArqbenchError(f"{path} holds no result file of a quantized model{hint}")
    elif path.is_file():
        path = result_file(path)
        quantized = [dict(read(path), path=str(path))]
        if quantized[0]["method"] == REFERENCE:
            raise ArqbenchError(f"{path} is the float model's row and has no policy; show a quantized result or "
                                f"its budget folder")
    else:
        raise ArqbenchError(f"{path} does not exist; pass a result file or a budget folder of `arqbench run --out`")
    cells = {(r["benchmark"], float(r["sigma"]), r.get("budget")) for r in quantized}
    if len(cells) > 1:
        raise ArqbenchError(f"{path} mixes cells of several (benchmark, sigma, budget): "
                            f"{', '.join(f'{b} sigma={s:g} budget={u}' for b, s, u in sorted(cells, key=str))}; "
                            f"pass one budget folder")
    seeds = sorted({r["seed"] for r in quantized})
    if seed is None:
        seed = seeds[0]
    elif seed not in seeds:
        raise ArqbenchError(f"{path} has no result for seed {seed}; seeds there: {', '.join(map(str, seeds))}")
    mine = sorted((r for r in quantized if r["seed"] == seed), key=lambda r: _label(r))
    first = next((r for r in mine if r["status"] == "ok"), mine[0])  # layers and cost model from a finished cell
    reference = _reference(Path(first["path"]).parent.parent / f"{REFERENCE}-seed{seed}.json", first)
    layers = layers_of(first)
    order = network_order(first, layers)
    shares = float_cost_shares(layers, _cost_model(first)) if layers else {}
    info = {l.name: l for l in layers or []}
    rows = [{"layer": name, "index": i, "kind": info[name].kind if name in info else None,
             "macs": info[name].macs if name in info else None,
             "params": info[name].params if name in info else None, "float_cost_share": shares.get(name)}
            for i, name in enumerate(order)]
    methods = [_numbers(r, order) for r in ([reference] if reference else []) + mine]
    return Shown(first["benchmark"], float(first["sigma"]), first.get("budget"), seed, rows, methods, seeds)


def result_file(path: Path) -> Path:
    """The result file to show for the file ``path``: itself, or a saved model's result beside it."""
    if path.suffix == saved.SUFFIX:
        result = path.with_suffix(".json")
        if result.is_file():
            return result
        raise ArqbenchError(f"{path} is a model file and no result file {result.name} is beside it; `arqbench show` "
                            f"takes a result file or a budget folder (certify a saved model with `arqbench certify "
                            f"--model {path}`)")
    if path.suffix != ".json":
        raise ArqbenchError(f"{path} is not a result file (.json); `arqbench show` takes a result file or a budget "
                            f"folder of `arqbench run --out`")
    return path


def _reference(path: Path, like: dict) -> dict | None:
    if not path.is_file():
        return None
    result = read(path)
    same = result["method"] == REFERENCE and result["benchmark"] == like["benchmark"] and \
        float(result["sigma"]) == float(like["sigma"])
    return dict(result, path=str(path)) if same else None


def _cost_model(result: dict) -> str:
    return (result.get("cost") or {}).get("cost_model") or "bitops"


def _label(result: dict) -> str:
    own = (((result.get("config") or {}).get("protocol") or {}).get("options") or {}).get(result["method"]) or {}
    return result["method"] + (f" ({', '.join(f'{k}={v}' for k, v in sorted(own.items()))})" if own else "")


def _numbers(result: dict, order: list[str]) -> dict:
    """One method's column: its bits per layer and, when it succeeded, its cost and ACR with interval."""
    policy = result.get("policy")
    bits = {name: list(policy[name]) if policy and name in policy else
            ([FLOAT_BITS, FLOAT_BITS] if result["method"] == REFERENCE else None) for name in order}
    out = {"method": result["method"], "label": _label(result), "path": result["path"], "status": result["status"],
           "error": result.get("error"), "traceback": result.get("traceback"),
           "policy": bits, "cost_model": _cost_model(result), "cost_fraction": None, "bitops_fraction": None,
           "acr": None, "acr_low": None, "acr_high": None, "clean_acc": None, "smoothed_acc": None}
    if result["status"] == "ok":
        cost, metrics = result.get("cost") or {}, result.get("metrics") or {}
        bitops = ((cost.get("models") or {}).get("bitops") or {}).get("fraction", cost.get("bitops_fraction"))
        out.update(cost_fraction=cost.get("fraction", bitops), bitops_fraction=bitops, acr=metrics.get("acr"),
                   clean_acc=metrics.get("clean_acc"), smoothed_acc=metrics.get("smoothed_acc"))
        if result.get("certificates"):
            interval = mean_interval(per_image(result["certificates"]).values())
            out.update(acr_low=interval.low, acr_high=interval.high)
    return out


# --- output --------------------------------------------------------------------------------------------


def table(shown: Shown, methods_first: bool = False) -> Table:
    """The rich table: layers by methods, cost and ACR in the footer; ``methods_first``: the methods' columns
    right after the layer and its share, then its kind, MACs and weights (to split a narrow window's table)."""
    budget = "" if shown.budget is None else f" budget={100 * shown.budget:g}%"
    others = [s for s in shown.seeds if s != shown.seed]
    title = (f"{shown.benchmark} sigma={shown.sigma:g}{budget} seed={shown.seed}"
             + (f" (also seeds {', '.join(map(str, others))}: --seed)" if others else ""))
    for m in shown.methods:
        if m["method"] == REFERENCE and m["acr"] is not None:
            half = "" if m["acr_low"] is None else f" ±{(m['acr_high'] - m['acr_low']) / 2:.3f}"
            title += f"; fp32 ACR {m['acr']:.3f}{half}"
    cost_name = "BitOPs" if shown.methods and shown.methods[-1]["cost_model"] == "bitops" else "cost"
    t = Table(title=title, box=box.SIMPLE_HEAD, show_footer=True, padding=(0, 1), collapse_padding=True,
              pad_edge=False, title_justify="left", caption_justify="left",
              caption=f"share: the layer's share of the float model's {cost_name}; cells: weight/activation bits; "
                      f"footer: {cost_name} % of float, ACR, half-width of its 95% interval over test images")
    columns = [m for m in shown.methods if m["method"] != REFERENCE]
    layer = [("layer", dict(footer=f"{cost_name} %\nACR\n± 95%"), lambda row: row["layer"])]
    details = [("kind", {}, lambda row: row["kind"] or "—"),
               ("MACs", dict(justify="right"), lambda row: _compact(row["macs"])),
               ("weights", dict(justify="right"), lambda row: _compact(row["params"]))]
    share = [("share", dict(justify="right"), lambda row: _percent(row["float_cost_share"]))]
    bits = [(_header(m), dict(footer=_footer(m), justify="right"),
             lambda row, m=m: _bits(m["policy"][row["layer"]])) for m in columns]
    layout = layer + (share + bits + details if methods_first else details + share + bits)
    for header, options, _ in layout:
        t.add_column(header, no_wrap=True, **options)
    for row in shown.layers:
        t.add_row(*[cell(row) for _, _, cell in layout])
    return t


def tables(shown: Shown, width: int) -> list[Table]:
    """``table`` if it fits ``width`` columns, else the layers with their share and each method's bits (split
    by methods where needed), then the layers' kind, MACs and weights."""
    whole = table(shown)
    return [whole] if natural_width(whole) <= width else fitted(table(shown, methods_first=True), width, keep=2)


def _header(m: dict) -> str:
    """The method, then each of its own options on a line (``label`` without its brackets)."""
    own = m["label"][len(m["method"]):].strip()
    return "\n".join([m["method"], *own.strip("()").split(", ")]) if own else m["method"]


def _footer(m: dict) -> str:
    if m["status"] != "ok":
        return "failed"
    cost = "—" if m["cost_fraction"] is None else f"{100 * m['cost_fraction']:.2f}"
    acr = "—" if m["acr"] is None else f"{m['acr']:.3f}"
    half = "" if m["acr_low"] is None else f"±{(m['acr_high'] - m['acr_low']) / 2:.3f}"
    return f"{cost}\n{acr}\n{half}"


def _bits(bits) -> str:
    if bits is None:
        return "—"
    return "fp" if bits[0] >= FLOAT_BITS else f"{bits[0]}/{bits[1]}"


def _percent(share) -> str:
    return "—" if share is None else f"{100 * share:.1f}%"


def _compact(value) -> str:
    if value is None:
        return "—"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.2g}{unit}" if value < 10 * size else f"{value / size:.0f}{unit}"
    return str(value)


def frame(shown: Shown) -> pd.DataFrame:
    """Tidy: one row per (method, layer), the method's numbers repeated on each of its rows."""
    rows = []
    for m in shown.methods:
        for layer in shown.layers:
            w, a = m["policy"][layer["layer"]] or (None, None)
            rows.append({"benchmark": shown.benchmark, "sigma": shown.sigma, "budget": shown.budget,
                         "seed": shown.seed, "method": m["method"], "label": m["label"], **layer, "w_bits": w,
                         "a_bits": a,
                         **{k: m[k] for k in ("cost_model", "cost_fraction", "bitops_fraction", "acr", "acr_low",
                                              "acr_high", "clean_acc", "smoothed_acc", "status", "path")}})
    return pd.DataFrame(rows)


def as_json(shown: Shown) -> str:
    return json.dumps({"benchmark": shown.benchmark, "sigma": shown.sigma, "budget": shown.budget,
                       "seed": shown.seed, "seeds": shown.seeds, "layers": shown.layers, "methods": shown.methods},
                      indent=1)
