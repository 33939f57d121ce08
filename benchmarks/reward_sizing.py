"""How large must arq's and haq's rewards be? Fidelity against seconds per candidate, one setting at a time.

    python benchmarks/reward_sizing.py --results leaderboards/base-models/results/digits-mobilenetv2/sigma0.25/budget0.011 \
        --out leaderboards/reward-fidelity          # the issue's grid on that folder's policies
    python benchmarks/reward_sizing.py --settings 'arq default,arq images=100' --policies 12
    python benchmarks/reward_sizing.py --quick   # seconds: 3 policies, tiny n and images (checks it runs)

The policies are ``benchmarks/reward_fidelity.py``'s (every method's shipped policy and each RL search's top
candidates of ``--results``, then seeded random ones) and each one's final ACR is that script's, through the
protocol (the common fine-tune, the full certification), cached under ARQBENCH_HOME. Each setting changes one
thing of a search's default reward (``all``: arq's four together):

- ``images``, ``n`` (the float model's samples on the search images; N_p = irs.n_p * n) and ``irs.n_p``;
- ``finetune_steps``: the candidate fine-tune (the protocol's recipe cut to that many steps); ``final`` is the
  final fine-tune's whole length, the recipe the shipped model gets;
- ``repeats=k``: the reward measured k times and averaged, the search's own noise stream and k - 1 fresh ones,
  what re-measuring a revisited policy and averaging its visits converges to (the candidate fine-tune is
  deterministic, so only the certification noise is fresh).

Per setting: the mean seconds per candidate (its fine-tune and its scoring; the float model's reference is
measured once per search and left out), that time against the default's, and the Spearman correlation of the
reward with the final ACR over every policy (95% percentile bootstrap over policies) and over each search's
top candidates alone. ``--out`` writes ``<stem>-sizing.csv`` (every policy's reward under every setting) and
``<stem>-sizing.md`` (the table, with the command). Each policy's reward under each setting is cached (with the
seconds it took), so parts of the grid can run in parallel processes (``--settings``) and a last run over the
whole grid writes the table. The last line reads ``sizing <setting>=<spearman> ...``.
"""

import argparse
import json
import math
import shlex
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from arqbench.files import cache_path, read_json, write_json_atomic, write_text_atomic
from arqbench.pipeline.config import known_settings, resolve
from arqbench.runtime import keep_freed_memory

sys.path.insert(0, str(Path(__file__).parent))
from reward_fidelity import fidelity_run, final_acr, policy_set, recorded_cells  # noqa: E402 (the same policies and final ACRs)

NOISE_SEED_STEP = 7919  # repeat r measures with noise seed + r * this: repeat 0 is the search's own stream
# (label, search, options merged into the run's, candidate fine-tune steps ("final": the final fine-tune's), repeats)
GRID = [
    ("arq default", "arq", {}, None, 1),
    ("arq images=100", "arq", {"arq": {"images": 100}}, None, 1),
    ("arq n=2000", "arq", {"arq": {"n": 2000}}, None, 1),
    ("arq irs.n_p=0.2", "arq", {"irs": {"n_p": 0.2}}, None, 1),
    ("arq finetune_steps=32", "arq", {}, 32, 1),
    ("arq finetune_steps=final", "arq", {}, "final", 1),
    ("arq repeats=3", "arq", {}, None, 3),
    ("arq all", "arq", {"arq": {"images": 100, "n": 2000}, "irs": {"n_p": 0.2}}, "final", 1),
    ("haq default", "haq", {}, None, 1),
    ("haq finetune_steps=32", "haq", {}, 32, 1),
    ("haq finetune_steps=final", "haq", {}, "final", 1),
]


def merged(options: dict, extra: dict) -> dict:
    out = {name: dict(values) for name, values in options.items()}
    for name, values in extra.items():
        out.setdefault(name, {}).update(values)
    return out


def final_steps(ctx, protocol) -> int:
    """The final fine-tune's optimizer steps: its epochs over the fine-tune split at the recipe's batch size."""
    recipe = ctx.benchmark.finetune
    epochs = getattr(protocol, "finetune_epochs", None)
    epochs = recipe.epochs if epochs is None else epochs
    return math.ceil(len(ctx.data.finetune) / recipe.batch_size) * epochs


def candidate_forwards(ctx, search, protocol) -> int:
    """The forward passes one candidate costs: its fine-tune's images, then arq's images * N_p noisy samples
    (the certifier's per image at the reward's n) or haq's scored images."""
    finetune = search.finetune_steps * ctx.benchmark.finetune.batch_size
    if hasattr(search, "scorer"):
        certifier = protocol.create("certifier", search.certifier)
        per_image = certifier.samples(replace(ctx.smoothing, n=search.n or ctx.smoothing.n))
        return finetune + min(search.images, len(ctx.data.search)) * per_image
    return finetune + len(search.samples(len(ctx.data.search))[0] or ctx.data.search)


@contextmanager
def noise_seed(ctx, offset: int):
    """``ctx`` certifying with its noise seed moved by ``offset`` (fresh certification noise, same fine-tune)."""
    kept = ctx.smoothing
    ctx.smoothing = replace(kept, seed=kept.seed + offset)
    try:
        yield ctx
    finally:
        ctx.smoothing = kept


def rewards(ctx, search, policies, repeats: int, key: dict) -> tuple[list[float], float]:
    """Each policy's reward under ``search`` (averaged over ``repeats`` noise streams, each a whole reward call:
    fine-tune and scoring, as a revisit re-measured) and the mean seconds per candidate. Each policy's reward and
    seconds are cached under ARQBENCH_HOME by ``key`` and the policy, so processes running parts of the grid
    share them, and a last run over the whole grid only writes the table."""
    scorers = []

    def measure(policy) -> dict:
        if not scorers:  # the float model's references, once per search: not a candidate's cost
            for r in range(repeats):
                with noise_seed(ctx, r * NOISE_SEED_STEP):
                    reward = (search.reward(ctx, search.scorer(ctx), "sizing") if hasattr(search, "scorer") else
                              search.reward(ctx, search.samples(len(ctx.data.search))[0]))
                    reward.reference()
                    scorers.append(reward)
        start, total = time.perf_counter(), 0.0
        for r, reward in enumerate(scorers):
            with noise_seed(ctx, r * NOISE_SEED_STEP):
                total += reward(policy)[0]
        return {"value": total / repeats, "seconds": time.perf_counter() - start}

    measured = []
    for policy in policies:
        path = cache_path("reward-sizing", {**key, "policy": sorted(policy.items())}, ".json")
        if not path.exists():
            write_json_atomic(path, measure(policy))
        measured.append(read_json(path))
    return [m["value"] for m in measured], sum(m["seconds"] for m in measured) / max(1, len(measured))


def spearman_ci(x, y, resamples: int = 2000) -> tuple[float, float, float]:
    """Spearman's rho and its 95% percentile bootstrap interval, policies resampled with replacement."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rho = float(spearmanr(x, y).statistic)
    if len(x) < 5:
        return rho, float("nan"), float("nan")
    draws = np.random.default_rng(0).integers(0, len(x), size=(resamples, len(x)))
    rhos = [spearmanr(x[i], y[i]).statistic for i in draws]
    low, high = np.nanpercentile(rhos, [2.5, 97.5])
    return rho, float(low), float(high)


def table(frame: pd.DataFrame, timing: dict, forwards: dict, command: str) -> tuple[str, dict]:
    distinct = frame.drop_duplicates("policy")
    lines = ["# Reward sizing", "", f"`{command}`", "",
             f"{len(distinct)} distinct policies ({', '.join(f'{k}: {v}' for k, v in frame['kind'].value_counts().items())}); "
             "final ACR: the protocol's fine-tune and certification. Forwards per candidate: the images its fine-tune "
             "steps pass plus its scoring's (arq: images * N_p noisy samples; haq: the images scored), times the "
             "repeats. Seconds per candidate: the fine-tune and the scoring as measured (on this machine, beside "
             "whatever else ran; the forwards are the machine-free cost).", "",
             "| setting | forwards / candidate | s / candidate | x default | Spearman, all [95% CI] | arq's top | haq's top |",
             "|---|---:|---:|---:|---|---:|---:|"]
    rho = {}
    for label, seconds in timing.items():
        search = label.split()[0]
        base = timing[f"{search} default"] if f"{search} default" in timing else seconds
        r, low, high = spearman_ci(distinct[label], distinct["final_acr"])
        rho[label] = r
        tops = []
        for kind in ("top-arq", "top-haq"):  # a search's top, its shipped candidate included
            rows = frame[frame["kind"] == kind].drop_duplicates("policy")
            tops.append(f"{spearmanr(rows[label], rows['final_acr']).statistic:.3f}" if len(rows) >= 3 else "—")
        lines.append(f"| {label} | {forwards[label]:,} | {seconds:.2f} | {seconds / base:.1f} | {r:.3f} [{low:.3f}, {high:.3f}] | "
                     + " | ".join(tops) + " |")
    return "\n".join(lines) + "\n", rho


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", default="digits")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--budget", type=float, default=0.025)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, help="a budget folder of `arqbench run` (as reward_fidelity.py's)")
    parser.add_argument("--top", type=int, default=10, help="each RL search's best distinct candidates (--results)")
    parser.add_argument("--policies", type=int, help="seeded random policies (default 24; --quick: 3)")
    parser.add_argument("--settings", help="comma list of the grid's labels to run, e.g. 'arq default,arq n=2000' "
                                           "(default: all: " + "; ".join(label for label, *_ in GRID) + ")")
    parser.add_argument("--out", type=Path, help="write <stem>-sizing.csv and .md here")
    parser.add_argument("--rewards-only", action="store_true",
                        help="measure (and cache) the rewards of --settings and stop, leaving the final ACRs and the "
                             "table to a last run (parallel processes would each certify every policy)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME.KEY=VALUE",
                        help="a plugin option under every setting, as for `arqbench run` (e.g. arq.finetune_steps=8)")
    parser.add_argument("--quick", action="store_true", help="a smoke run in seconds (its numbers mean nothing)")
    args = parser.parse_args()
    keep_freed_memory()
    grid = GRID if not args.settings else [g for g in GRID if g[0] in args.settings.split(",")]
    unknown = set(args.settings.split(",")) - {g[0] for g in GRID} if args.settings else set()
    if unknown:
        raise SystemExit(f"--settings: unknown {', '.join(sorted(unknown))}; the grid is: "
                         + "; ".join(label for label, *_ in GRID))

    options: dict = {}
    settings: dict = {"search_activations": True}
    cells = recorded_cells(args.results, args.seed) if args.results else []
    if cells:
        args.benchmark, args.sigma, args.budget = cells[0]["benchmark"], cells[0]["sigma"], cells[0]["budget"]
        settings = known_settings(cells[0]["config"]["protocol"])
        options = {name: dict(values) for name, values in (settings.pop("options", None) or {}).items()}
    if args.policies is None:
        args.policies = 3 if args.quick else 24
    if args.quick:
        settings.update(n=100, test_images=5, finetune_epochs=1)
        options = merged(options, {"arq": {"images": 4, "n": 100, "rescore_top": 0, "finetune_steps": 1},
                                   "haq": {"finetune_steps": 1}})
        grid = [(label, search, merged(extra, {"arq": {"images": 8, "n": 200}}) if extra else extra,
                 1 if steps == "final" else (2 if steps else steps), min(repeats, 2))
                for label, search, extra, steps, repeats in grid]
    run = fidelity_run(args, cells, settings, options)
    benchmark, protocol, prepared, ctx = run.prepared.benchmark, run.protocol, run.prepared, run.context()

    chosen = policy_set(ctx, cells, args.policies, args.top, args.seed)
    frame = pd.DataFrame([{"kind": kind, "label": label, "policy": json.dumps(sorted(p.items()))}
                          for kind, label, p in chosen])
    distinct = {key: policy for key, (_, _, policy) in zip(frame["policy"], chosen)}
    policies = list(distinct.values())
    timing, forwards = {}, {}
    for label, name, extra, steps, repeats in grid:
        setting = resolve(benchmark, {**settings, "options": merged(options, extra)})
        search = setting.create("search", name)
        steps = steps or search.finetune_steps  # the grid's, else the search's own (a number, or "final")
        n_steps = final_steps(ctx, protocol) if steps == "final" else steps
        search = replace(search, finetune_steps=n_steps)
        ctx.protocol = setting
        try:
            key = {"what": "reward-sizing", "benchmark": args.benchmark, "protocol": setting.as_dict(),
                   "search": {"name": name, **asdict(search)}, "repeats": repeats, "base": prepared.fingerprint,
                   "sigma": args.sigma, "budget": args.budget, "seed": args.seed}
            values, seconds = rewards(ctx, search, policies, repeats, key)
        finally:
            ctx.protocol = protocol
        frame[label] = frame["policy"].map(dict(zip(distinct, values)))
        timing[label] = seconds
        forwards[label] = repeats * candidate_forwards(ctx, search, setting)
        print(f"{label} ({n_steps} fine-tune steps): {seconds:.2f} s per candidate", flush=True)

    if args.rewards_only:
        print(f"sizing: rewards of {len(grid)} settings cached; the final ACRs and the table: run without "
              "--rewards-only")
        return
    finals = {}
    for k, (key, policy) in enumerate(distinct.items()):
        finals[key] = final_acr(run, policy)
        print(f"[{k + 1}/{len(distinct)}] final ACR {finals[key]:.4f}", flush=True)

    frame["final_acr"] = frame["policy"].map(finals)
    command = shlex.join(["python", "benchmarks/reward_sizing.py", *sys.argv[1:]])
    summary, rho = table(frame, timing, forwards, command)
    print(summary)
    if args.out is not None:
        stem = f"{args.benchmark}-sigma{args.sigma:g}-budget{args.budget:g}-seed{args.seed}-sizing"
        write_text_atomic(args.out / f"{stem}.csv", frame.to_csv(index=False))
        write_text_atomic(args.out / f"{stem}.md", summary)
        print(f"wrote {args.out / stem}.csv and .md")
    print("sizing " + " ".join(f"{label.replace(' ', ':')}={value:.3f}" for label, value in rho.items()))


if __name__ == "__main__":
    main()
