"""How faithfully does each search's reward rank policies as their shipped models rank?

    python benchmarks/reward_fidelity.py                    # 24 policies, digits, sigma 0.25, budget 2.5%
    python benchmarks/reward_fidelity.py --finetune-steps 0,8,32 --policies 30
    python benchmarks/reward_fidelity.py --quick      # seconds: 3 policies, tiny n and images (checks it runs)
    python benchmarks/reward_fidelity.py --results leaderboards/results/digits-mobilenetv2/sigma0.25/budget0.011 \
        --out leaderboards/reward-fidelity            # + every method's shipped policy and the searches' top 10

With ``--results`` (a budget folder of ``arqbench run``) the policy set also holds the policy each method
shipped there (seed ``--seed``) and the 10 best distinct candidates of each RL search by its own search reward
(``--top``), where the winner's curse lives; the protocol, sigma and budget are that folder's, and the base
model must be the one its cells used. ``arq-rescore`` is arq's reward on its re-score sample. Spearman is
reported over every policy and over each search's top candidates alone, and the shipped policies of uniform and
hawq are placed against arq's own under arq's rewards: above (the search failed to find them) or below (the
reward misranks them). ``--out`` writes the table (csv) and the summary (markdown) with the command.

Seeded random policies within the budget (weights and activations searched, the action wall of the
protocol) are each scored by every search's own objective on the search split, and then taken through
the protocol itself: the common fine-tune and the full certification on the test subset, whose ACR is
what a leaderboard reports. The Spearman rank correlation between a search's score and that final ACR
is its reward's fidelity: a search can only find what its reward can see. The objectives:

- ``arq``: the reward of ``arq`` with its default estimator (``predicted``), after the candidate fine-tune;
  ``arq-certified``: the same with the paper's estimator (the IRS certificates' ACR);
- ``haq``: the reward of ``haq`` (search-split accuracy after the candidate fine-tune);
- ``hawq``: the negated ILP objective, -sum_i Omega_i(b_i) (Hessian-weighted weight perturbation);
- ``robust-ilp``: its negated objective (summed per-layer sensitivity), when that search is installed.

With several ``--finetune-steps`` the RL rewards are measured after each candidate fine-tune length
(the final ACR does not depend on it). The last line reads ``spearman arq=<x> haq=<y> hawq=<z> ...``
for the searches' default settings.
"""

import argparse
import json
import random
import shlex
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from scipy.stats import spearmanr

from arqbench import plugins
from arqbench.files import cache_path, read_json, write_json_atomic, write_text_atomic
from arqbench.pipeline.cell import CellRun
from arqbench.pipeline.config import known_settings, resolve
from arqbench.pipeline.prepare import prepare
from arqbench.pipeline.results import Cell, read_all
from arqbench.search.agent import candidate_steps, top_distinct
from arqbench.quantization.policy import MAX_BITS, MIN_BITS
from arqbench.runtime import keep_freed_memory


def random_policy(ctx, rng: random.Random):
    policy = {}
    for layer in ctx.layers:
        if layer.name in ctx.fixed:
            policy[layer.name] = (MAX_BITS, MAX_BITS)
        else:
            policy[layer.name] = (rng.randint(MIN_BITS, MAX_BITS),
                                  rng.randint(MIN_BITS, MAX_BITS) if ctx.search_activations else MAX_BITS)
    return ctx.within_budget(policy)


def final_acr(run: CellRun, policy) -> float:
    """The policy's ACR under the protocol (fine-tune, full certification), cached under ARQBENCH_HOME: it is
    a deterministic function of the policy, the protocol and the base model, whatever search settings."""
    protocol = {k: v for k, v in run.protocol.as_dict().items() if k != "options"}  # search options don't matter
    protocol["quantizer_options"] = run.protocol.plugin_options("quantizer", run.protocol.quantizer)
    key = {"what": "fidelity-final-acr", "policy": sorted(policy.items()), "protocol": protocol,
           "base": run.prepared.fingerprint, "sigma": run.cell.sigma, "seed": run.cell.seed}
    path = cache_path("fidelity", key, ".json")
    if path.exists():
        return read_json(path)["acr"]
    certs, *_ = run.certify(run.train(policy).model)
    acr = sum(c.radius for c in certs if c.correct) / len(certs)
    write_json_atomic(path, {"acr": acr})
    return acr


def recorded_cells(folder: Path, seed: int) -> list[dict]:
    """The finished cells of seed ``seed`` in a budget folder of ``arqbench run``."""
    cells = [r for r in read_all(folder) if r["seed"] == seed and r["status"] == "ok" and r.get("policy")]
    if not cells:
        raise SystemExit(f"--results {folder}: no finished quantized cell of seed {seed}")
    return cells


def as_policy(bits: dict) -> dict:
    return {name: tuple(value) for name, value in bits.items()}


def policy_set(ctx, cells: list[dict], policies: int, top: int, seed: int) -> list[tuple[str, str, dict]]:
    """(kind, label, policy): every method's shipped policy, each RL search's ``top`` candidates by its own search
    reward, then ``policies`` seeded random ones."""
    chosen = [("shipped", r["method"], as_policy(r["policy"])) for r in sorted(cells, key=lambda r: r["method"])]
    for r in cells:
        history = (r.get("search") or {}).get("history") or []
        chosen += [(f"top-{r['method']}", f"{r['method']} #{k + 1} (episode {h['episode']})", as_policy(h["policy"]))
                   for k, h in enumerate(top_distinct(history, top))]
    rng, drawn = random.Random(seed), []
    while len(drawn) < policies:
        policy = random_policy(ctx, rng)
        if policy not in drawn:
            drawn.append(policy)
    return chosen + [("random", f"random {k + 1}", p) for k, p in enumerate(drawn)]


def fidelity_run(args, cells: list[dict], settings: dict, options: dict) -> CellRun:
    """The cell the policies are scored and certified in: ``args``' benchmark, sigma, budget and seed under
    ``settings`` and ``options`` (with ``--option`` over them), on the base model ``cells`` were computed from."""
    from arqbench.cli import option

    for name, key, value in map(option, args.option):
        options.setdefault(name, {})[key] = value
    device = torch.device("cpu")
    benchmark = plugins.create("benchmark", args.benchmark)
    protocol = resolve(benchmark, {**settings, "options": options})
    prepared = prepare(benchmark, args.sigma, protocol, device, base_seed=protocol.base_seed(args.seed))
    theirs = {(r.get("base_model") or {}).get("fingerprint") for r in cells}
    if cells and theirs != {prepared.fingerprint}:
        raise SystemExit(f"--results {args.results} was computed from base model(s) {sorted(map(str, theirs))}, "
                         f"this machine's is {prepared.fingerprint}: its shipped policies' final ACRs would differ")
    return CellRun(Cell(args.benchmark, args.sigma, args.budget, "fidelity", args.seed), prepared, protocol, device)


def spearman(frame, objective: str, rows=None) -> float | None:
    rows = frame if rows is None else frame[rows]
    rows = rows.drop_duplicates("policy")
    if len(rows) < 3 or objective not in rows:
        return None
    return float(spearmanr(rows[objective], rows["final_acr"]).statistic)


def summary(frame, objectives: list[str], command: str) -> str:
    """The markdown summary: Spearman over every policy and over each search's top candidates, and where
    uniform's and hawq's shipped policies fall under arq's and haq's own rewards."""
    lines = ["# Reward fidelity", "", f"`{command}`", "",
             f"{frame['policy'].nunique()} distinct policies ({', '.join(f'{k}: {v}' for k, v in frame['kind'].value_counts().items())}); "
             "final ACR: the protocol's fine-tune and certification, the leaderboard's number.", "",
             "| objective | Spearman, all | Spearman, arq's top | Spearman, haq's top |", "|---|---:|---:|---:|"]
    for name in objectives:
        cells = [spearman(frame, name), spearman(frame, name, frame["kind"] == "top-arq"),
                 spearman(frame, name, frame["kind"] == "top-haq")]
        lines.append(f"| {name} | " + " | ".join("—" if c is None else f"{c:.3f}" for c in cells) + " |")
    shipped = frame[frame["kind"] == "shipped"].set_index("label")
    lines += [""]
    for reward, own in (("arq", "arq"), ("arq-rescore", "arq"), ("haq", "haq")):
        if reward not in shipped or own not in shipped.index:
            continue
        for other in ("uniform", "hawq", "robust-ilp"):
            if other in shipped.index:
                mine, theirs = shipped.loc[own, reward], shipped.loc[other, reward]
                verdict = ("above: the search did not find it" if theirs > mine else
                           "below: the reward ranks it under what shipped" if theirs < mine else "a tie")
                gap = shipped.loc[other, "final_acr"] - shipped.loc[own, "final_acr"]
                lines.append(f"- under {reward}: {other}'s shipped policy scores {theirs:.3f} against {own}'s "
                             f"{mine:.3f}, {verdict} (final ACR {other} - {own}: {gap:+.3f})")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", default="digits")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--budget", type=float, default=0.025)
    parser.add_argument("--policies", type=int, help="seeded random policies (default 24; --quick: 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, help="a budget folder of `arqbench run`: its cells' shipped policies "
                                                     "and searches' top candidates join the set (its benchmark, "
                                                     "sigma, budget and protocol are used)")
    parser.add_argument("--top", type=int, default=10, help="each RL search's best distinct candidates (--results)")
    parser.add_argument("--out", type=Path, help="write the table (csv) and the summary (markdown) here")
    parser.add_argument("--finetune-steps", default=None, help="candidate fine-tune lengths to compare, e.g. 0,8,final "
                                                               "(default: the searches' default)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME.KEY=VALUE",
                        help="a plugin option, as for `arqbench run` (e.g. arq.images=50)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run in seconds (checks it runs; its numbers mean nothing): 3 policies, n=100 "
                             "and 5 images (ARQ: 10 images at its n), one fine-tune epoch, one Hessian batch (options given win)")
    args = parser.parse_args()
    keep_freed_memory()

    options: dict = {}
    settings: dict = {"search_activations": True}
    cells = recorded_cells(args.results, args.seed) if args.results else []
    if cells:  # the folder's benchmark, sigma, budget and protocol
        args.benchmark, args.sigma, args.budget = cells[0]["benchmark"], cells[0]["sigma"], cells[0]["budget"]
        settings = known_settings(cells[0]["config"]["protocol"])
        options = {name: dict(values) for name, values in (settings.pop("options", None) or {}).items()}
    if args.policies is None:
        args.policies = 3 if args.quick else 24
    if args.quick:
        settings.update(n=100, test_images=5, finetune_epochs=1)
        options = {"arq": {"images": 10, "rescore_images": 10, "rescore_n": 100},
                   "robust-ilp": {"images": 5, "n": 100}, "hawq": {"batches": 1}}
    run = fidelity_run(args, cells, settings, options)
    protocol, ctx = run.protocol, run.context()

    arq = {name: protocol.create("search", "arq") if name == "arq" else
           plugins.create("search", "arq", **{**protocol.plugin_options("search", "arq"), "estimator": "certified"})
           for name in ("arq", "arq-certified")}
    haq = protocol.create("search", "haq")
    default_steps = haq.finetune_steps
    steps = [default_steps] if args.finetune_steps is None else [
        s if s == "final" else int(s) for s in args.finetune_steps.split(",")]
    scorers = {name: search.scorer(ctx) for name, search in arq.items()}
    if arq["arq"].rescore_top:
        scorers["arq-rescore"] = arq["arq"].scorer(ctx, rescore=True)
    floats = {name: score(ctx.model, "float")[0]["acr"] for name, score in scorers.items()}
    float_acc = ctx.accuracy(ctx.model)
    hawq = protocol.create("search", "hawq")
    traces, _, _ = hawq.traces(ctx)
    from arqbench.baselines.hawq import sensitivities  # hawq's own objective

    omega = sensitivities(ctx.model, ctx.layers, {n: float(t["trace"]) for n, t in traces.items()}, ctx.quantizer)
    robust = protocol.create("search", "robust-ilp") if "robust-ilp" in plugins.names("search") else None

    chosen = policy_set(ctx, cells, args.policies, args.top, args.seed)
    measured: dict[str, dict] = {}  # a policy's scores, once however many kinds hold it
    rows, seconds = [], {}
    start = time.perf_counter()
    for k, (kind, label, policy) in enumerate(chosen):
        key = json.dumps(sorted(policy.items()))
        if key not in measured:
            scores: dict[str, float] = {}
            for n_steps in steps:
                tag = "" if n_steps == default_steps else f"@{n_steps}"
                t0 = time.perf_counter()
                candidate = ctx.candidate(policy, candidate_steps(n_steps, "--finetune-steps"))
                seconds.setdefault(f"candidate{tag}", []).append(time.perf_counter() - t0)
                for name, score in scorers.items():
                    t0 = time.perf_counter()
                    acr = score(candidate, "candidate")[0]["acr"]
                    seconds.setdefault(f"{name}{tag}", []).append(time.perf_counter() - t0)
                    scores[f"{name}{tag}"] = (acr - floats[name]) / floats[name]
                t0 = time.perf_counter()
                scores[f"haq{tag}"] = 0.1 * 100 * (ctx.accuracy(candidate) - float_acc)
                seconds.setdefault(f"haq{tag}", []).append(time.perf_counter() - t0)
            scores["hawq"] = -sum(omega[name][bits[0]] for name, bits in policy.items() if name not in ctx.fixed)
            if robust is not None:
                scores["robust-ilp"] = -robust.objective(ctx, policy)
            scores["final_acr"] = final_acr(run, policy)
            measured[key] = scores
        rows.append({"kind": kind, "label": label, "cost": ctx.cost_fraction(policy), **measured[key], "policy": key})
        print(f"[{k + 1}/{len(chosen)}] {label}: cost {rows[-1]['cost']:.4f} final ACR {rows[-1]['final_acr']:.4f} "
              + " ".join(f"{name}={value:.3f}" for name, value in measured[key].items() if name != "final_acr")
              + f" ({time.perf_counter() - start:.0f}s)", flush=True)
    frame = pd.DataFrame(rows)
    objectives = [c for c in frame.columns if c not in ("kind", "label", "cost", "policy", "final_acr")]
    rho = {name: spearman(frame, name) for name in objectives}
    final = frame.drop_duplicates("policy")["final_acr"]
    print(f"final ACR over {len(final)} policies: min {final.min():.4f}, max {final.max():.4f}")
    print("seconds per candidate: " + ", ".join(f"{k} {sum(v) / len(v):.3f}" for k, v in seconds.items()))
    if args.out is not None:
        stem = f"{args.benchmark}-sigma{args.sigma:g}-budget{args.budget:g}-seed{args.seed}"
        command = shlex.join(["python", "benchmarks/reward_fidelity.py", *sys.argv[1:]])
        write_text_atomic(args.out / f"{stem}.csv", frame.to_csv(index=False))
        write_text_atomic(args.out / f"{stem}.md", summary(frame, objectives, command))
        print(f"wrote {args.out / stem}.csv and .md")
    print("all objectives: " + " ".join(f"{name}={value:.3f}" for name, value in rho.items()))
    shown = ["arq", "haq", "hawq"] + (["robust-ilp"] if robust is not None else [])
    print("spearman " + " ".join(f"{name}={rho[name]:.3f}" for name in shown))


if __name__ == "__main__":
    main()
