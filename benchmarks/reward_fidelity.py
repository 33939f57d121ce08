"""How faithfully does each search's reward rank policies as their shipped models rank?

    python benchmarks/reward_fidelity.py                    # 24 policies, digits, sigma 0.25, budget 2.5%
    python benchmarks/reward_fidelity.py --finetune-steps 0,8,32 --policies 30
    python benchmarks/reward_fidelity.py --quick      # seconds: 3 policies, tiny n and images (checks it runs)

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
import random
import time

import torch
from scipy.stats import spearmanr

from arqbench import plugins
from arqbench.files import cache_path, read_json, write_json_atomic
from arqbench.pipeline.cell import CellRun
from arqbench.pipeline.config import resolve
from arqbench.pipeline.prepare import prepare
from arqbench.pipeline.results import Cell
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
    certs, _ = run.certify(run.train(policy).model)
    acr = sum(c.radius for c in certs if c.correct) / len(certs)
    write_json_atomic(path, {"acr": acr})
    return acr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", default="digits")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--budget", type=float, default=0.025)
    parser.add_argument("--policies", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--finetune-steps", default=None, help="candidate fine-tune lengths to compare, e.g. 0,8,32 "
                                                               "(default: the searches' default)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME.KEY=VALUE",
                        help="a plugin option, as for `arqbench run` (e.g. arq.images=50)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run in seconds (checks it runs; its numbers mean nothing): 3 policies, n=100 "
                             "and 5 images (ARQ: 10 images at its n), one fine-tune epoch, one Hessian batch (options given win)")
    args = parser.parse_args()
    keep_freed_memory()
    from arqbench.cli import option

    options: dict = {}
    settings: dict = {"search_activations": True}
    if args.quick:
        args.policies = 3
        settings.update(n=100, test_images=5, finetune_epochs=1)
        options = {"arq": {"images": 10}, "robust-ilp": {"images": 5, "n": 100}, "hawq": {"batches": 1}}
    for name, key, value in map(option, args.option):
        options.setdefault(name, {})[key] = value
    device = torch.device("cpu")
    benchmark = plugins.create("benchmark", args.benchmark)
    protocol = resolve(benchmark, {**settings, "options": options})
    prepared = prepare(benchmark, args.sigma, protocol, device)
    run = CellRun(Cell(args.benchmark, args.sigma, args.budget, "fidelity", args.seed), prepared, protocol, device)
    ctx = run.context()

    arq = {name: protocol.create("search", "arq") if name == "arq" else
           plugins.create("search", "arq", **{**protocol.plugin_options("search", "arq"), "estimator": "certified"})
           for name in ("arq", "arq-certified")}
    haq = protocol.create("search", "haq")
    default_steps = haq.finetune_steps
    steps = [default_steps] if args.finetune_steps is None else [int(s) for s in args.finetune_steps.split(",")]
    scorers = {name: search.scorer(ctx) for name, search in arq.items()}
    floats = {name: score(ctx.model, "float")[0]["acr"] for name, score in scorers.items()}
    float_acc = ctx.accuracy(ctx.model)
    hawq = protocol.create("search", "hawq")
    traces, _, _ = hawq.traces(ctx)
    from arqbench.baselines.hawq import sensitivities  # hawq's own objective

    omega = sensitivities(ctx.model, ctx.layers, {n: float(t["trace"]) for n, t in traces.items()}, ctx.quantizer)
    robust = protocol.create("search", "robust-ilp") if "robust-ilp" in plugins.names("search") else None

    rng = random.Random(args.seed)
    policies = []
    while len(policies) < args.policies:
        policy = random_policy(ctx, rng)
        if policy not in policies:
            policies.append(policy)

    scores: dict[str, list[float]] = {}
    final, seconds = [], {}
    start = time.perf_counter()
    for k, policy in enumerate(policies):
        for n_steps in steps:
            tag = "" if n_steps == default_steps else f"@{n_steps}"
            t0 = time.perf_counter()
            candidate = ctx.candidate(policy, n_steps)
            seconds.setdefault(f"candidate{tag}", []).append(time.perf_counter() - t0)
            for name, score in scorers.items():
                t0 = time.perf_counter()
                acr = score(candidate, "candidate")[0]["acr"]
                seconds.setdefault(f"{name}{tag}", []).append(time.perf_counter() - t0)
                scores.setdefault(f"{name}{tag}", []).append((acr - floats[name]) / floats[name])
            t0 = time.perf_counter()
            scores.setdefault(f"haq{tag}", []).append(0.1 * 100 * (ctx.accuracy(candidate) - float_acc))
            seconds.setdefault(f"haq{tag}", []).append(time.perf_counter() - t0)
        scores.setdefault("hawq", []).append(
            -sum(omega[name][bits[0]] for name, bits in policy.items() if name not in ctx.fixed))
        if robust is not None:
            scores.setdefault("robust-ilp", []).append(-robust.objective(ctx, policy))
        final.append(final_acr(run, policy))
        print(f"[{k + 1}/{len(policies)}] cost {ctx.cost_fraction(policy):.4f} final ACR {final[-1]:.4f} "
              + " ".join(f"{name}={values[-1]:.3f}" for name, values in scores.items())
              + f" ({time.perf_counter() - start:.0f}s)", flush=True)
    rho = {name: spearmanr(values, final).statistic for name, values in scores.items()}
    print(f"final ACR over {len(final)} policies: min {min(final):.4f}, max {max(final):.4f}")
    print("seconds per candidate: " + ", ".join(f"{k} {sum(v) / len(v):.3f}" for k, v in seconds.items()))
    print("all objectives: " + " ".join(f"{name}={value:.3f}" for name, value in rho.items()))
    shown = ["arq", "haq", "hawq"] + (["robust-ilp"] if robust is not None else [])
    print("spearman " + " ".join(f"{name}={rho[name]:.3f}" for name in shown))


if __name__ == "__main__":
    main()
