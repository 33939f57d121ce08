"""Leaderboards: per benchmark, one table per (sigma, budget), ranked by ACR, the fp32 row on top."""

import os
from pathlib import Path

import pandas as pd

from .errors import ArqbenchError
from .files import write_json_atomic, write_text_atomic
from .results import REFERENCE

METRICS = ["bitops_pct", "size_kib", "clean_acc", "smoothed_acc", "acr", "abstain_rate", "search_s"]


def frame(results: list[dict]) -> pd.DataFrame:
    """One row per result file, flattened."""
    rows = []
    for r in results:
        row = {k: r.get(k) for k in ("benchmark", "method", "sigma", "budget", "seed", "status", "error", "path")}
        if r.get("status") == "ok":
            m, c, t = r["metrics"], r["cost"], r["timing"]
            row.update(clean_acc=m["clean_acc"], smoothed_acc=m["smoothed_acc"], acr=m["acr"],
                       abstain_rate=m["abstain_rate"], bitops_pct=100 * c["bitops_fraction"],
                       size_kib=c["size_bits"] / 8 / 1024, search_s=t["search_s"],
                       within_budget=c.get("within_budget", True), images=m.get("images"),
                       n=r["config"]["protocol"].get("n"))
            row.update({f"cert@{radius}": v for radius, v in m["certified_acc"].items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(values: pd.Series, digits: int, scale: float = 1.0) -> str:
    values = values.dropna() * scale
    if values.empty:
        return ""
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def table(df: pd.DataFrame, radii: list[str], link_from: Path) -> pd.DataFrame:
    """Aggregate seeds per method and rank by mean ACR; failed and over-budget rows stay, marked."""
    rows = []
    for method, group in df.groupby("method", sort=False):
        ok = group[group.status == "ok"]
        links = " ".join(f"[{int(s)}]({os.path.relpath(p, link_from)})" for s, p in zip(group.seed, group.path))
        note = ""
        if (group.status != "ok").any():
            note = "failed: " + "; ".join(sorted(set(group[group.status != "ok"].error.astype(str))))
        elif "within_budget" in ok and not ok.within_budget.all():
            note = "over budget"
        row = {"method": method, "_acr": ok.acr.mean() if len(ok) else float("-inf"),
               "BitOPs %": _fmt(ok.bitops_pct, 2), "Size (KiB)": _fmt(ok.size_kib, 1),
               "Clean acc %": _fmt(ok.clean_acc, 1, 100), "Smoothed acc %": _fmt(ok.smoothed_acc, 1, 100)}
        row.update({f"Cert@{r} %": _fmt(ok[f"cert@{r}"], 1, 100) for r in radii if f"cert@{r}" in ok})
        row.update({"ACR": _fmt(ok.acr, 3), "Abstain %": _fmt(ok.abstain_rate, 1, 100),
                    "Search (s)": _fmt(ok.search_s, 1), "Seeds": links, "Note": note})
        rows.append(row)
    out = pd.DataFrame(rows)
    reference = out[out.method == REFERENCE]
    others = out[out.method != REFERENCE].sort_values("_acr", ascending=False, kind="stable")
    others.insert(0, "Rank", range(1, len(others) + 1))
    reference = reference.assign(Rank="—")
    out = pd.concat([reference, others]).drop(columns="_acr").rename(columns={"method": "Method"})
    return out[["Rank"] + [c for c in out.columns if c != "Rank"]]


def sections(df: pd.DataFrame, link_from: Path):
    """(sigma, budget, table) for every (sigma, budget) of one benchmark; fp32 rows join every budget."""
    radii = sorted({c[5:] for c in df.columns if c.startswith("cert@")}, key=float)
    reference = df[df.method == REFERENCE]
    quantized = df[df.method != REFERENCE]
    for (sigma, budget), group in quantized.groupby(["sigma", "budget"], sort=True):
        rows = pd.concat([reference[reference.sigma == sigma], group])
        yield sigma, budget, table(rows, radii, link_from)
    for sigma in sorted(set(reference.sigma) - set(quantized.sigma)):
        yield sigma, None, table(reference[reference.sigma == sigma], radii, link_from)


def render(results: list[dict], out_dir: Path, fmt: str = "markdown") -> list[Path]:
    """Write one leaderboard file per benchmark into ``out_dir``; returns the paths written."""
    if not results:
        raise ArqbenchError("no results to rank; run `arqbench run` first or point --results at a results dir")
    df = frame(results)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for benchmark, bdf in df.groupby("benchmark"):
        path = out_dir / f"{benchmark}.{ {'markdown': 'md'}.get(fmt, fmt) }"
        if fmt == "csv":
            bdf.drop(columns=["error"]).to_csv(path, index=False)
        elif fmt == "json":
            write_json_atomic(path, bdf.to_dict(orient="records"))
        else:
            write_text_atomic(path, markdown(benchmark, bdf, out_dir))
        written.append(path)
    return written


def markdown(benchmark: str, df: pd.DataFrame, out_dir: Path) -> str:
    ok = df[df.status == "ok"]
    n = sorted({int(v) for v in ok.n.dropna()}) if "n" in ok else []
    images = sorted({int(v) for v in ok.images.dropna()}) if "images" in ok else []
    lines = [f"# arqbench leaderboard: {benchmark}", "",
             "Generated by `arqbench leaderboard` from the result files linked in each row. "
             "Ranked by ACR (average certified radius); the fp32 row is the float base model. "
             "BitOPs % is of the float model (32-bit weights and activations). "
             f"Certification: Cohen et al. CERTIFY, n = {', '.join(map(str, n))}, "
             f"{', '.join(map(str, images))} test images. Mean ± std over seeds where several ran.", ""]
    for sigma, budget, tab in sections(df, out_dir):
        title = f"sigma = {sigma:g}" + ("" if budget is None else f", budget = {100 * budget:g}% of float BitOPs")
        lines += [f"## {title}", "", tab.to_markdown(index=False, disable_numparse=True), ""]
    return "\n".join(lines)
