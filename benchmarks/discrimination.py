"""Does bit allocation matter on a benchmark? Seeded random policies against uniform, at one low budget.

    python benchmarks/discrimination.py --benchmark digits-mobilenetv2      # 24 policies at 1.1%, activations searched
    python benchmarks/discrimination.py --benchmark digits --budget 0.0255 --no-search-activations
    python benchmarks/discrimination.py --quick   # seconds: digits, 2 policies, n=100, 5 images, no fine-tune

Samples ``--policies`` different random policies that meet ``--budget``: every free unit (a layer, or a group of
layers the benchmark ties; the first and last layer stay 8/8) draws weight bits uniformly from [2, 8]
(activation bits too with --search-activations, else 8), then a random unit above 2 bits loses one bit
at a time until the cost fits. Each policy, and the ``uniform`` method's, goes through a leaderboard
cell's pipeline: the same fine-tune (same seed) and the same certification (same images, same noise
seeds), so their per-image radii are paired (``arqbench.smoothing.intervals``).

Prints each policy's ACR with its 95% interval over images and its paired ACR difference to uniform,
then the spread of the random policies' ACR and the best one's paired difference to uniform. The best of
K is picked on the images it is scored on, so its interval is optimistic; how many policies' own
paired intervals exclude zero is not.
"""

import argparse
import random
import statistics
import sys
import time

import torch
from rich.console import Console
from rich.table import Table

from arqbench import plugins
from arqbench.errors import ArqbenchError, InfeasibleBudget
from arqbench.pipeline.cell import CellRun
from arqbench.pipeline.config import resolve
from arqbench.pipeline.prepare import Prepared, prepare
from arqbench.pipeline.results import REFERENCE, Cell
from arqbench.pipeline.sweep import check_budgets
from arqbench.quantization.policy import MAX_BITS, MIN_BITS, Policy, float_policy
from arqbench.runtime import keep_freed_memory
from arqbench.search.ilp import tie_units
from arqbench.smoothing.intervals import mean_interval, paired_difference, per_image


def shipped(prepared: Prepared, protocol, budget: float, seed: int, device: torch.device,
            policy: Policy | None = None, method: str = "uniform") -> tuple[Policy | None, float, dict[int, float]]:
    """A leaderboard cell of ``method`` (``uniform``, or ``fp32``: the float model), or of ``policy`` in its
    place: search, the protocol's fine-tune, its certification. Returns (policy, clean accuracy, per-image
    ACR terms)."""
    cell = Cell(prepared.benchmark.name, prepared.sigma, None if method == REFERENCE else budget, method, seed)
    run = CellRun(cell, prepared, protocol, device)
    trained = run.train(policy)
    certs, *_ = run.certify(trained.model)
    return trained.policy, trained.clean_acc, per_image(c.as_dict() for c in certs)


def random_policy(units: list[list[str]], held: set[str], fraction, budget: float, search_activations: bool,
                  rng: random.Random) -> Policy:
    """Random bits per unit, then one bit off a random unit (weights or activations) until ``fraction`` fits."""
    bits = [[rng.randint(MIN_BITS, MAX_BITS), rng.randint(MIN_BITS, MAX_BITS) if search_activations else MAX_BITS]
            for _ in units]

    def policy() -> Policy:
        out = {name: (MAX_BITS, MAX_BITS) for name in held}
        out.update({name: (w, a) for (w, a), unit in zip(bits, units) for name in unit})
        return out

    slots = [(u, which) for u in range(len(units)) for which in ((0, 1) if search_activations else (0,))]
    while fraction(policy()) > budget:
        lowerable = [(u, which) for u, which in slots if bits[u][which] > MIN_BITS]
        if not lowerable:
            raise InfeasibleBudget(f"budget {budget:.4%} cannot be met by any policy")
        u, which = rng.choice(lowerable)
        bits[u][which] -= 1
    return policy()


def distinct_policies(count: int, draw, tries: int = 50) -> list[Policy]:
    """Up to ``count`` different policies from ``draw(0)``, ``draw(1)``, ... (at most ``tries * count`` draws):
    a small model has few policies near a tight budget, and a repeated one tells nothing new."""
    found: list[Policy] = []
    for k in range(tries * count):
        policy = draw(k)
        if policy not in found:
            found.append(policy)
            if len(found) == count:
                break
    return found


def describe(policy: Policy, layers) -> str:
    """Bits in layer order, ``w/a`` (or ``w`` when every activation is 8)."""
    weights_only = all(policy[l.name][1] == MAX_BITS for l in layers)
    return " ".join(str(policy[l.name][0]) if weights_only else "{}/{}".format(*policy[l.name]) for l in layers)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", help="default: digits-mobilenetv2 (digits with --quick)")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--budget", type=float, default=0.011, help="fraction of float cost (default 0.011)")
    parser.add_argument("--policies", type=int, default=24, help="random policies (default 24)")
    parser.add_argument("--search-activations", action=argparse.BooleanOptionalAction, default=True,
                        help="random and uniform policies choose activation bits too (default: yes)")
    parser.add_argument("--seed", type=int, default=0, help="fine-tune and certification seed of every policy")
    # protocol overrides, for quick checks; by default the benchmark's own protocol
    parser.add_argument("--n", type=int)
    parser.add_argument("--test-images", type=int)
    parser.add_argument("--finetune-epochs", type=int)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run in seconds (checks it runs; its numbers mean nothing): digits, 2 policies, "
                             "n=100, 5 images, no fine-tune, unless given")
    args = parser.parse_args(argv)
    quick = {"benchmark": "digits", "policies": 2, "n": 100, "test_images": 5, "finetune_epochs": 0}
    for key, value in quick.items():
        if args.quick and getattr(args, key) in (None, parser.get_default(key)):
            setattr(args, key, value)
    args.benchmark = args.benchmark or "digits-mobilenetv2"
    return args


def main(argv=None) -> None:
    args = parse(argv)
    keep_freed_memory()
    device = torch.device("cpu")
    start = time.perf_counter()
    try:
        if args.policies < 1:
            raise ArqbenchError(f"--policies must be a positive integer, got {args.policies}")
        benchmark = plugins.create("benchmark", args.benchmark)
        protocol = resolve(benchmark, {"search_activations": args.search_activations, "n": args.n,
                                       "test_images": args.test_images, "finetune_epochs": args.finetune_epochs})
        check_budgets(benchmark, protocol, [args.budget])
        prepared = prepare(benchmark, args.sigma, protocol, device)
        cost = plugins.create("cost_model", protocol.cost_model)
        float_cost = cost.cost(prepared.layers, float_policy(prepared.layers))

        def fraction(policy: Policy) -> float:
            return cost.cost(prepared.layers, policy) / float_cost

        units, held = tie_units(prepared.layers, prepared.fixed_layers(protocol),
                                benchmark.tied_layers(prepared.model))
        policies = distinct_policies(args.policies, lambda k: random_policy(
            units, held, fraction, args.budget, args.search_activations, random.Random(1000 * args.seed + k)))
    except ArqbenchError as exc:
        sys.exit(f"discrimination: error: {exc}")
    rows = {REFERENCE: shipped(prepared, protocol, args.budget, args.seed, device, method=REFERENCE),
            "uniform": shipped(prepared, protocol, args.budget, args.seed, device)}
    for k, policy in enumerate(policies):
        rows[f"random-{k}"] = shipped(prepared, protocol, args.budget, args.seed, device, policy)
    title = (f"{args.benchmark}, sigma {args.sigma:g}, budget {args.budget:.2%} of float {protocol.cost_model}"
             f"{', activations searched' if args.search_activations else ''}; {protocol.test_images} images, "
             f"n={protocol.n}, seed {args.seed}")
    report(title, rows, prepared.layers, fraction, time.perf_counter() - start)


def report(title: str, rows: dict, layers, fraction, seconds: float) -> None:
    """The table of every policy, then the spread of the random ones and the best one against uniform."""
    console = Console(highlight=False, width=220)
    uniform = rows["uniform"][2]
    diffs = {name: paired_difference(radii, uniform) for name, (_, _, radii) in rows.items()}
    table = Table(title=title)
    for column in ("policy", "cost %", "clean %", "ACR [95%]", "ACR - uniform [95%, paired]", "bits (layer order)"):
        table.add_column(column)
    for name, (policy, clean, radii) in rows.items():
        table.add_row(name, "100%" if policy is None else f"{fraction(policy):.2%}", f"{clean:.1%}",
                      str(mean_interval(radii.values())), "—" if name == "uniform" else str(diffs[name]),
                      "float" if policy is None else describe(policy, layers))
    console.print(table)

    acr = {name: mean_interval(radii.values()).mean for name, (_, _, radii) in rows.items() if name.startswith("random")}
    best = max(acr, key=acr.get)
    spread = sorted(acr.values())
    console.print(f"random ACR over {len(acr)} policies: min {spread[0]:.3f}, median {statistics.median(spread):.3f}, "
                  f"max {spread[-1]:.3f}, range {spread[-1] - spread[0]:.3f}, "
                  f"sd {statistics.stdev(spread) if len(spread) > 1 else 0.0:.3f}; "
                  f"uniform {mean_interval(uniform.values()).mean:.3f}")
    console.print(f"best random ({best}) - uniform, paired: {diffs[best]}")
    console.print(f"random policies whose paired interval is above uniform: {sum(diffs[n].low > 0 for n in acr)}, "
                  f"below: {sum(diffs[n].high < 0 for n in acr)}, of {len(acr)}")
    console.print(f"{seconds:.0f} s")


if __name__ == "__main__":
    main()
