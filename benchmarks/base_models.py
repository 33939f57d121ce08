"""Which verdicts of a table hold across base models? Every pair of methods, on each network and pooled.

    python benchmarks/base_models.py leaderboards/base-models/results --out leaderboards/base-models
    python benchmarks/base_models.py --quick        # seconds: a tiny two-seed run of uniform and random

A results folder run with ``--base-seeds per-seed`` quantizes a different network for each seed. Per table
(benchmark, sigma, budget) and pair of methods A, B (ranked by their pooled ACR), this prints the paired
difference A - B of the per-image radii averaged over the seeds (the leaderboard's comparison, its 95% interval,
unadjusted) and, on each base model alone, the paired difference on that network: ``+`` where its interval is
above 0, ``-`` below, ``=`` where it contains 0. A pooled verdict that some base model contradicts (a ``-``),
or that rests on one network (``=`` on the others), is a statement about those networks, not about the methods.
The last line reads ``holds <k>/<n>``: of the n pooled significant differences, the k that no base model
contradicts. ``--out`` writes ``base-models.csv`` and ``base-models.md``.
"""

import argparse
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from arqbench.files import write_text_atomic
from arqbench.pipeline.results import REFERENCE, read_all
from arqbench.smoothing.intervals import paired_difference, per_image, seed_mean


def network(result: dict) -> tuple:
    """(its training seed, its fingerprint): base models in seed order."""
    base = result.get("base_model") or {}
    return (-1 if base.get("seed") is None else base["seed"]), str(base.get("fingerprint"))


def sign(interval) -> str:
    return "+" if interval.low > 0 else "-" if interval.high < 0 else "="


def verdicts(results: list[dict]) -> pd.DataFrame:
    cells: dict[tuple, dict[str, list[dict]]] = {}
    for r in results:
        if r["status"] == "ok" and r["method"] != REFERENCE and r.get("certificates"):
            cells.setdefault((r["benchmark"], r["sigma"], r["budget"]), {}).setdefault(r["method"], []).append(r)
    rows = []
    for (benchmark, sigma, budget), methods in sorted(cells.items()):
        pooled = {m: seed_mean([per_image(r["certificates"]) for r in runs]) for m, runs in methods.items()}
        by_base = {m: {network(r): per_image(r["certificates"]) for r in runs} for m, runs in methods.items()}
        order = sorted(pooled, key=lambda m: -sum(pooled[m].values()) / len(pooled[m]))
        for i, a in enumerate(order):
            for b in order[i + 1:]:
                both = paired_difference(pooled[a], pooled[b])
                bases = sorted(set(by_base[a]) & set(by_base[b]))
                each = [sign(paired_difference(by_base[a][k], by_base[b][k])) for k in bases]
                rows.append({"benchmark": benchmark, "sigma": sigma, "budget": budget, "a": a, "b": b,
                             "difference": both.mean, "low": both.low, "high": both.high, "pooled": sign(both),
                             "base_models": len(bases), "per_base_model": "".join(each),
                             "above": each.count("+"), "tied": each.count("="), "below": each.count("-")})
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame, command: str) -> str:
    lines = ["# Verdicts across base models", "", f"`{command}`", "",
             "Per pair A - B: the paired difference of per-image radii averaged over the seeds, with its 95% "
             "interval, and on each base model alone (one seed each, in seed order): + above 0, - below, = the "
             "interval contains 0.", ""]
    for (benchmark, sigma, budget), table in frame.groupby(["benchmark", "sigma", "budget"], sort=False):
        lines += [f"## {benchmark}, sigma = {sigma:g}, budget = {100 * budget:g}%", "",
                  "| A - B | pooled [95% CI] | per base model | holds |", "|---|---:|:---:|---|"]
        for r in table.itertuples():
            holds = ("no verdict" if r.pooled == "=" else "contradicted" if (r.below if r.pooled == "+" else r.above)
                     else f"{max(r.above, r.below)}/{r.base_models} agree")
            lines.append(f"| {r.a} - {r.b} | {r.difference:+.3f} [{r.low:+.3f}, {r.high:+.3f}] {r.pooled} | "
                         f"{r.per_base_model} | {holds} |")
        lines.append("")
    return "\n".join(lines)


def quick(folder: Path) -> None:
    tiny = ["--n0", "20", "--n", "200", "--test-images", "8", "--batch-size", "200", "--finetune-epochs", "1"]
    subprocess.run([sys.executable, "-m", "arqbench.cli", "run", "--methods", "uniform,random", "--seed", "0,1",
                    "--base-seeds", "per-seed", "--budget", "0.05", "--out", str(folder), *tiny], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="?", help="a results folder of `arqbench run --base-seeds per-seed`")
    parser.add_argument("--out", type=Path, help="write base-models.csv and base-models.md here")
    parser.add_argument("--quick", action="store_true", help="a tiny two-seed run first (checks it runs)")
    args = parser.parse_args()
    if args.quick:
        args.results = Path(tempfile.mkdtemp(prefix="base-models-")) if args.results is None else args.results
        quick(args.results)
    if args.results is None:
        parser.error("give a results folder, or --quick")
    frame = verdicts(read_all(args.results))
    if frame.empty:
        raise SystemExit(f"{args.results}: no pair of finished quantized cells")
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(frame.to_string(index=False, float_format=lambda v: f"{v:+.3f}"))
    if args.out is not None:
        command = shlex.join(["python", "benchmarks/base_models.py", *sys.argv[1:]])
        write_text_atomic(args.out / "base-models.csv", frame.to_csv(index=False))
        write_text_atomic(args.out / "base-models.md", markdown(frame, command))
        print(f"wrote {args.out / 'base-models.csv'} and .md")
    significant = frame[frame.pooled != "="]
    holds = sum(not (r.below if r.pooled == "+" else r.above) for r in significant.itertuples())
    print(f"holds {holds}/{len(significant)}")


if __name__ == "__main__":
    main()
