"""How far does each method's shipped ACR move from seed to seed, and how much did its search explore?

    python benchmarks/spread.py leaderboards/results/digits          # every table of a results folder
    python benchmarks/spread.py leaderboards/base-models/results --out leaderboards/base-models
    python benchmarks/spread.py --quick                              # the published MobileNetV2 cells (seconds)

Per (benchmark, sigma, budget, method), over the seeds that finished: how many seeds and how many distinct
base models they quantized, the shipped ACR's mean, sample standard deviation and range over the seeds (what the
leaderboard's per-image interval does not show), and for the RL searches how many distinct policies the search
scored (``search.distinct_candidates``, else counted from its history) and the share of the last third of its
episodes that only revisited a policy already scored (an agent whose exploration noise has decayed). A method's
spread larger than the gap between two methods means one seed's table cannot order them. The last line reads
``spread <method>=<sd> ...`` for the first table, and ``--out`` writes ``spread.csv``.
"""

import argparse
import statistics
from pathlib import Path

import pandas as pd

from arqbench.files import write_text_atomic
from arqbench.pipeline.results import REFERENCE, read_all

PUBLISHED = Path(__file__).resolve().parents[1] / "leaderboards" / "results" / "digits-mobilenetv2"


def explored(result: dict) -> tuple[int | None, float | None]:
    """(distinct candidates scored, share of the last third of the episodes that were revisits)."""
    search = result.get("search") or {}
    history = search.get("history") or []
    if not history:
        return None, None
    distinct = search.get("distinct_candidates", sum(not h.get("revisit", False) for h in history))
    last = history[2 * len(history) // 3:]
    return distinct, sum(bool(h.get("revisit", False)) for h in last) / len(last)


def spread(results: list[dict]) -> pd.DataFrame:
    cells: dict[tuple, list[dict]] = {}
    for r in results:
        if r["status"] == "ok" and r["method"] != REFERENCE:
            cells.setdefault((r["benchmark"], r["sigma"], r["budget"], r["method"]), []).append(r)
    rows = []
    for (benchmark, sigma, budget, method), runs in sorted(cells.items(), key=lambda kv: tuple(map(str, kv[0]))):
        acrs = [r["metrics"]["acr"] for r in runs]
        explore = [explored(r) for r in runs]
        distinct = [d for d, _ in explore if d is not None]
        revisits = [v for _, v in explore if v is not None]
        rows.append({"benchmark": benchmark, "sigma": sigma, "budget": budget, "method": method, "seeds": len(runs),
                     "base_models": len({(r.get("base_model") or {}).get("fingerprint") for r in runs}),
                     "acr_mean": statistics.fmean(acrs), "acr_sd": statistics.stdev(acrs) if len(acrs) > 1 else None,
                     "acr_range": max(acrs) - min(acrs),
                     "distinct_candidates": statistics.fmean(distinct) if distinct else None,
                     "last_third_revisits": statistics.fmean(revisits) if revisits else None})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="?", help="a results folder of `arqbench run`")
    parser.add_argument("--out", type=Path, help="write spread.csv here")
    parser.add_argument("--quick", action="store_true", help="the published digits-mobilenetv2 cells at sigma 0.25")
    args = parser.parse_args()
    if args.quick:
        args.results = PUBLISHED / "sigma0.25"
    if args.results is None:
        parser.error("give a results folder, or --quick")
    frame = spread(read_all(args.results))
    if frame.empty:
        raise SystemExit(f"{args.results}: no finished quantized cell")
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.out is not None:
        write_text_atomic(args.out / "spread.csv", frame.to_csv(index=False))
        print(f"wrote {args.out / 'spread.csv'}")
    first = frame[(frame.sigma == frame.sigma.iloc[0]) & (frame.budget == frame.budget.iloc[0])]
    print("spread " + " ".join(f"{r.method}={r.acr_sd:.3f}" if r.acr_sd is not None else f"{r.method}=—"
                               for r in first.itertuples()))


if __name__ == "__main__":
    main()
