"""Does robust-ilp's paired profile keep the certified profile's meaning at a fraction of its cost?

    python benchmarks/profile_fidelity.py --out results/profile-fidelity        # both embedded benchmarks, sigma 0.25 and 0.5
    python benchmarks/profile_fidelity.py --benchmark digits-mobilenetv2 --sigma 0.25 --out results/pf
    python benchmarks/profile_fidelity.py --quick --out /tmp/pf                  # tiny settings (the tests run this)

For each benchmark and sigma (activations searched, seed --seed), in one process on the same threads:

1. robust-ilp's sensitivity profile measured both ways (``arqbench.search.sensitivity``): ``certified`` (every
   point certified by ``irs`` against f) and ``paired`` (the default: every point against f on the same
   noise, points above a within-noise-of-zero one skipped), each from a cold cache (a fresh, empty
   ARQBENCH_HOME, removed after), with its wall time, noisy forward passes and their ratio; and ``hawq``'s
   search, timed the same way, for reference;
2. the Spearman correlation of the two profiles' ACR drops over every point (skipped points at the value the
   ILP uses for them, 0), and over the points both measured;
3. the policy the ILP picks from each profile at three budgets, and each policy's shipped ACR: the protocol's
   fine-tune and certification (seed --seed, --test-images images, n = --n), as a leaderboard cell; with
   the paired interval of (paired's ACR - certified's) over the test images (``arqbench.smoothing.intervals``).

Writes ``summary.csv``, ``profiles.csv`` and ``policies.csv`` under --out.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch
from scipy.stats import spearmanr

from arqbench import plugins
from arqbench.errors import ArqbenchError
from arqbench.pipeline.cell import CellRun
from arqbench.pipeline.config import resolve
from arqbench.pipeline.prepare import prepare
from arqbench.pipeline.results import Cell
from arqbench.runtime import keep_freed_memory
from arqbench.smoothing.intervals import paired_difference, paired_p, per_image

BUDGETS = {"digits": (0.015, 0.025, 0.05), "digits-mobilenetv2": (0.0075, 0.011, 0.02)}
METHODS = ("certified", "paired")
QUICK = {"n0": 20, "n": 200, "test_images": 5, "batch_size": 400, "finetune_epochs": 0,
         "options": {"robust-ilp": {"images": 5}, "irs": {"n_p": 0.5}}}


@contextmanager
def cold_cache(parent: Path):
    """A fresh, empty ARQBENCH_HOME for what runs inside (removed after): measured from scratch."""
    old = os.environ.get("ARQBENCH_HOME")
    where = Path(tempfile.mkdtemp(prefix="cold-cache-", dir=parent))
    os.environ["ARQBENCH_HOME"] = str(where)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ARQBENCH_HOME", None)
        else:
            os.environ["ARQBENCH_HOME"] = old
        shutil.rmtree(where, ignore_errors=True)


def describe(policy, layers) -> str:
    return " ".join("{}/{}".format(*policy[l.name]) for l in layers)


def measure(name: str, prepared, protocol, seed: int, budgets, device, out: Path) -> dict:
    """One profile method from a cold cache: its cost, its rows, and the ILP's policy at each budget."""
    options = {**protocol.plugin_options("search", "robust-ilp"), "profile": name}
    search = plugins.create("search", "robust-ilp", **options)

    def context(budget):
        return CellRun(Cell(prepared.benchmark.name, prepared.sigma, budget, "robust-ilp", seed), prepared, protocol,
                       device).context()

    with cold_cache(out):
        start = time.perf_counter()
        _, measured, _ = search.sensitivities(context(budgets[0]))
        seconds = time.perf_counter() - start
        policies = {budget: search.search(context(budget)).policy for budget in budgets}
    return {"seconds": seconds, "forwards": measured.forwards, "measured": measured.computed,
            "skipped": measured.skipped, "rows": measured.rows, "policies": policies}


def hawq_seconds(prepared, protocol, seed: int, budget: float, device, out: Path) -> float:
    ctx = CellRun(Cell(prepared.benchmark.name, prepared.sigma, budget, "hawq", seed), prepared, protocol,
                  device).context()
    with cold_cache(out):
        start = time.perf_counter()
        protocol.create("search", "hawq").search(ctx)
        return time.perf_counter() - start


def shipped(prepared, protocol, seed: int, budget: float, policy, device) -> dict[int, float]:
    """Per test image, the ACR term of ``policy`` taken through the protocol as a leaderboard cell."""
    run = CellRun(Cell(prepared.benchmark.name, prepared.sigma, budget, "robust-ilp", seed), prepared, protocol,
                  device)
    certs, *_ = run.certify(run.train(policy).model)
    return per_image(c.as_dict() for c in certs)


def one(benchmark_name: str, sigma: float, args, overrides: dict, device, out: Path) -> tuple[dict, list, list]:
    benchmark = plugins.create("benchmark", benchmark_name)
    protocol = resolve(benchmark, overrides)
    prepared = prepare(benchmark, sigma, protocol, device, checkpoint=args.checkpoint)
    budgets = BUDGETS[benchmark_name]
    where = f"{benchmark_name} sigma {sigma:g} seed {args.seed}"
    results = {}
    for name in METHODS:
        results[name] = measure(name, prepared, protocol, args.seed, budgets, device, out)
        r = results[name]
        print(f"{where}: {name} profile {r['seconds']:.1f} s, {r['forwards']:,} noisy forwards, "
              f"{r['measured']} points measured, {r['skipped']} skipped", flush=True)
    hawq = hawq_seconds(prepared, protocol, args.seed, budgets[0], device, out)
    old, new = results["certified"], results["paired"]
    x = [r["acr_drop"] for r in old["rows"]]
    y = [r["acr_drop"] for r in new["rows"]]
    both = [(a, b) for a, b, r in zip(x, y, new["rows"]) if not r.get("skipped")]
    rho = spearmanr(x, y).statistic
    rho_measured = spearmanr(*zip(*both)).statistic if len(both) > 2 else float("nan")
    summary = {"benchmark": benchmark_name, "sigma": sigma, "seed": args.seed, "threads": torch.get_num_threads(),
               "certified_s": old["seconds"], "paired_s": new["seconds"], "time_ratio": old["seconds"] / new["seconds"],
               "certified_forwards": old["forwards"], "paired_forwards": new["forwards"],
               "forward_ratio": old["forwards"] / new["forwards"], "hawq_s": hawq,
               "paired_over_hawq": new["seconds"] / hawq, "points": len(x), "paired_skipped": new["skipped"],
               "spearman": rho, "spearman_measured": rho_measured}
    print(f"{where}: cost certified/paired: time {summary['time_ratio']:.1f}x, forwards {summary['forward_ratio']:.1f}x; "
          f"hawq search {hawq:.1f} s (paired = {summary['paired_over_hawq']:.2f}x hawq); "
          f"spearman {rho:.3f} over {len(x)} points ({rho_measured:.3f} over the {len(both)} both measured)",
          flush=True)
    profiles = [{"benchmark": benchmark_name, "sigma": sigma, "seed": args.seed, "method": name, **row}
                for name in METHODS for row in results[name]["rows"]]

    policies, radii = [], {}
    for budget in budgets:
        chosen = {name: results[name]["policies"][budget] for name in METHODS}
        for name, policy in chosen.items():
            key = (budget, describe(policy, prepared.layers))
            if key not in radii:
                radii[key] = shipped(prepared, protocol, args.seed, budget, policy, device)
        terms = {name: radii[budget, describe(chosen[name], prepared.layers)] for name in METHODS}
        diff = paired_difference(terms["paired"], terms["certified"])
        p = paired_p(terms["paired"], terms["certified"])
        for name in METHODS:
            acr = sum(terms[name].values()) / len(terms[name])
            policies.append({"benchmark": benchmark_name, "sigma": sigma, "seed": args.seed, "budget": budget,
                             "method": name, "policy": describe(chosen[name], prepared.layers), "shipped_acr": acr,
                             "paired_minus_certified": diff.mean, "low": diff.low, "high": diff.high, "p": p})
            print(f"{where} budget {budget:.2%}: {name:9s} ACR {acr:.4f}  {describe(chosen[name], prepared.layers)}")
        print(f"{where} budget {budget:.2%}: paired - certified ACR {diff} (paired t p = {p:.3g})", flush=True)
    return summary, profiles, policies


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="digits,digits-mobilenetv2", help="comma list (default: both)")
    parser.add_argument("--sigma", default="0.25,0.5", help="comma list (default 0.25,0.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=10_000, help="n of the shipped models' certification")
    parser.add_argument("--test-images", type=int, default=100)
    parser.add_argument("--checkpoint", type=Path, help="base model checkpoint (one benchmark and sigma)")
    parser.add_argument("--quick", action="store_true", help="digits, sigma 0.25, tiny settings (the tests)")
    parser.add_argument("--out", type=Path, required=True, help="folder of the CSVs")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse(argv)
    keep_freed_memory()
    device = torch.device("cpu")
    benchmarks = ["digits"] if args.quick else args.benchmark.split(",")
    sigmas = [0.25] if args.quick else [float(s) for s in args.sigma.split(",")]
    overrides = {"search_activations": True, "n": args.n, "test_images": args.test_images}
    if args.quick:
        overrides.update(QUICK)
    try:
        unknown = [b for b in benchmarks if b not in BUDGETS]
        if unknown:
            raise ArqbenchError(f"--benchmark must be among {', '.join(BUDGETS)}, got '{unknown[0]}'")
        args.out.mkdir(parents=True, exist_ok=True)
        summaries, profiles, policies = [], [], []
        for name in benchmarks:
            for sigma in sigmas:
                summary, rows, chosen = one(name, sigma, args, overrides, device, args.out)
                summaries.append(summary)
                profiles += rows
                policies += chosen
                # written after every setting, so a long run keeps what it has measured
                pd.DataFrame(summaries).to_csv(args.out / "summary.csv", index=False)
                pd.DataFrame(profiles).to_csv(args.out / "profiles.csv", index=False)
                pd.DataFrame(policies).to_csv(args.out / "policies.csv", index=False)
    except ArqbenchError as exc:
        sys.exit(f"profile_fidelity: error: {exc}")
    print(f"wrote summary.csv, profiles.csv and policies.csv under {args.out}")


if __name__ == "__main__":
    main()
