"""Does re-scoring the top candidates ship better models than the argmax of the noisy search reward?

    python benchmarks/rescoring.py      # arq, haq; digits-mobilenetv2, sigma 0.25, budget 1.1%, seeds 0-2, k 3,5,10
    python benchmarks/rescoring.py --benchmark digits --seeds 0 --top 5
    python benchmarks/rescoring.py --quick      # seconds: digits, 4 episodes, tiny n and images (checks it runs)

Per (method, seed) two searches run: rescoring off, and with ``rescore_top`` = the largest k.
The episodes of the second do not depend on k (re-scoring happens after them) and the top k of a search are
the first k of its top max-k, so every k's choice is read off the one run: the best re-score among the
first k of ``info["rescored"]``. (For ``arq`` the second search's episodes are the first's; ``haq`` without
``haq.images`` searches on half the search split when it re-scores, so its k rows include that change.)
Each distinct shipped policy then goes through the protocol: the common fine-tune and the full certification
on the test subset. Per method and k the script prints the shipped policy's search reward and re-score (mean
over seeds), its final ACR, the paired 95% interval of final ACR against rescoring off (per test image, the
mean over seeds, ``arqbench.smoothing.intervals``) and the extra search time of re-scoring k candidates
(the seconds the re-score of the first k took, the float model's re-score sample included). The last line
reads ``rescoring <method> k=<k> <difference> [<low>, <high>] ...``.
"""

import argparse
import time

import torch

from arqbench import plugins
from arqbench.files import cache_path, read_json, write_json_atomic
from arqbench.pipeline.cell import CellRun
from arqbench.pipeline.config import resolve
from arqbench.pipeline.prepare import prepare
from arqbench.pipeline.results import Cell
from arqbench.runtime import keep_freed_memory
from arqbench.search.ledger import Ledger
from arqbench.smoothing.intervals import mean_interval, paired_difference, seed_mean

QUICK_OPTIONS = {"arq": {"images": 5, "n": 100, "rescore_images": 10, "rescore_n": 200, "finetune_steps": 1,
                         "warmup": 2},
                 "haq": {"finetune_steps": 1, "warmup": 2}}


def final_radii(run: CellRun, policy) -> dict[int, float]:
    """Per test image, the ACR contribution (radius if correct, else 0) of ``policy`` under the protocol
    (fine-tune, full certification), cached under ARQBENCH_HOME: a deterministic function of the policy, the
    protocol and the base model, whatever search settings."""
    protocol = {k: v for k, v in run.protocol.as_dict().items() if k != "options"}  # search options don't matter
    protocol["quantizer_options"] = run.protocol.plugin_options("quantizer", run.protocol.quantizer)
    key = {"what": "rescoring-final-radii", "policy": sorted(policy.items()), "protocol": protocol,
           "base": run.prepared.fingerprint, "sigma": run.cell.sigma, "seed": run.cell.seed}
    path = cache_path("rescoring", key, ".json")
    if not path.exists():
        certs, *_ = run.certify(run.train(policy).model)
        write_json_atomic(path, {str(c.index): c.radius if c.correct else 0.0 for c in certs})
    return {int(i): r for i, r in read_json(path).items()}


def choose(rescored: list[dict], k: int) -> dict:
    """The candidate a search re-scoring its top ``k`` ships, read off a run that re-scored more."""
    return max(rescored[:k], key=lambda r: r["rescore"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", default="digits-mobilenetv2")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--budget", type=float, default=0.011)
    parser.add_argument("--methods", default="arq,haq")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--top", default="3,5,10", help="the k to compare with rescoring off")
    parser.add_argument("--option", action="append", default=[], metavar="NAME.KEY=VALUE",
                        help="a plugin option, as for `arqbench run` (e.g. arq.rescore_images=100)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run in seconds (checks it runs; its numbers mean nothing): digits, seed 0, "
                             "k = 2, 4 episodes, n = 100, 5 test images, tiny search samples (options given win)")
    args = parser.parse_args()
    keep_freed_memory()
    from arqbench.cli import option

    settings: dict = {"search_activations": True}
    options: dict = {}
    if args.quick:
        args.benchmark, args.seeds, args.top = "digits", "0", "2"
        settings.update(n=100, n0=20, test_images=5, finetune_epochs=1)
        options = {name: dict(values) for name, values in QUICK_OPTIONS.items()}
        options["*"] = {"episodes": 4}
    for name, key, value in map(option, args.option):
        options.setdefault(name, {})[key] = value
    methods, seeds = args.methods.split(","), [int(s) for s in args.seeds.split(",")]
    tops = sorted({int(k) for k in args.top.split(",")} - {0})
    device = torch.device("cpu")
    benchmark = plugins.create("benchmark", args.benchmark)
    off = resolve(benchmark, {**settings, "options": {**options, **{
        method: {**options.get(method, {}), "rescore_top": 0} for method in methods}}})  # whatever its default
    prepared = prepare(benchmark, args.sigma, off, device)

    rows: dict[tuple[str, int], dict] = {}  # (method, k) -> seed -> (shipped candidate, radii); k = 0: off
    extra: dict[tuple[str, int], list[float]] = {}
    start = time.perf_counter()
    for method in methods:
        on = resolve(benchmark, {**settings, "options": {**options, method: {**options.get(method, {}),
                                                                             "rescore_top": max(tops)}}})
        for seed in seeds:
            cell = Cell(args.benchmark, args.sigma, args.budget, method, seed)
            plain, rescoring = CellRun(cell, prepared, off, device), CellRun(cell, prepared, on, device)
            t0 = time.perf_counter()
            policy, info = plain.search(Ledger())
            plain_s = time.perf_counter() - t0
            _, rescored_info = rescoring.search(Ledger())
            rescored = rescored_info["rescored"]
            shipped = {"policy": {k: list(v) for k, v in policy.items()}, "reward": info["best_reward"]}
            shipped["rescore"] = next((r["rescore"] for r in rescored if r["policy"] == shipped["policy"]), None)
            rows.setdefault((method, 0), {})[seed] = (shipped, final_radii(plain, policy))
            for k in tops:
                pick = choose(rescored, k)
                radii = final_radii(plain, {name: tuple(bits) for name, bits in pick["policy"].items()})
                rows.setdefault((method, k), {})[seed] = (pick, radii)
                extra.setdefault((method, k), []).append((sum(r["rescore_s"] for r in rescored[:k]), plain_s))
            print(f"{method} seed {seed}: search {plain_s:.0f}s; top {len(rescored)} search reward / re-score: "
                  + ", ".join(f"{r['reward']:.3f}/{r['rescore']:.3f}" for r in rescored)
                  + f" ({time.perf_counter() - start:.0f}s)", flush=True)

    summary = []
    print(f"\n{args.benchmark}, sigma {args.sigma:g}, budget {100 * args.budget:g}%, seeds {args.seeds}: "
          "shipped policy (mean over seeds)")
    for method in methods:
        base = seed_mean(radii for _, radii in rows[(method, 0)].values())
        for k in [0] + tops:
            picks = rows[(method, k)].values()
            mine = seed_mean(radii for _, radii in picks)
            rescores = [p["rescore"] for p, _ in picks if p.get("rescore") is not None]
            line = (f"{method} k={k}{' (off)' if k == 0 else ''}: search reward "
                    f"{sum(p['reward'] for p, _ in picks) / len(picks):.4f}, re-score "
                    + (f"{sum(rescores) / len(rescores):.4f}" if len(rescores) == len(picks) else "-")
                    + f", final ACR {mean_interval(mine.values())}")
            if k:
                difference = paired_difference(mine, base)
                seconds = sum(s for s, _ in extra[(method, k)]) / len(extra[(method, k)])
                ratio = sum(s / total for s, total in extra[(method, k)]) / len(extra[(method, k)])
                line += f", vs off {difference}, extra search time +{seconds:.1f}s (+{100 * ratio:.0f}%)"
                summary.append(f"{method} k={k} {difference}")
            print(line)
    print("rescoring " + " ".join(summary))


if __name__ == "__main__":
    main()
