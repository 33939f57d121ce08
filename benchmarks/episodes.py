"""How many episodes do the RL searches need? arq and haq at several episode counts, shipped and certified.

    python benchmarks/episodes.py                  # digits-mobilenetv2, sigma 0.25, 1.1%, activations searched,
                                                   # seeds 0-2, 100/300/600 episodes: about two hours of one core
    python benchmarks/episodes.py --baselines leaderboards/results   # uniform and robust-ilp from published cells
    python benchmarks/episodes.py --episodes 100,300 --seeds 0      # a part of it
    python benchmarks/episodes.py --quick          # seconds: digits, 2 and 4 episodes, tiny n
    python benchmarks/episodes.py --baselines leaderboards/results-0.2 --finetune-recipe bn_freeze=none \
        --out leaderboards/episodes    # the published curve: the recipe of the published cells
    python benchmarks/episodes.py --benchmark digits --budget 0.015 --episodes 600 --noise-decay 0.99,0.995 \
        --baselines leaderboards/base-models/results/digits --out leaderboards/noise-decay   # HAQ's schedule against a slower one
                                   # (the 0.99 arm: the leaderboard's own arq and haq cells, 600 episodes each)

Each (method, episodes, noise decay) runs as ``arqbench run`` would run it (``arqbench.run`` with ``episodes=E``
and ``--option <method>.noise_decay=D``), into ``--out``/episodes<E> (``-decay<D>`` unless D is the agent's
default), so every cell is an ordinary result file: the protocol's fine-tune and certification, the same images
and noise as any other row. At the agents' defaults, ``--baselines``' own arq and haq cells serve as that arm
where they searched as many episodes. ``uniform`` and ``robust-ilp`` are the yardsticks, run once into
``--out``/baselines, or read from ``--baselines`` (a results folder of the same protocol, e.g. the published
one: cells are matched by benchmark, sigma, budget, method and seed, and must have certified the same images).

Prints, per method and episode count: the shipped ACR with its 95% interval over images (each image's radius
averaged over the seeds first, as the leaderboard does), its paired difference to uniform and to robust-ilp
(95% interval, image by image), to the same method at the fewest episodes and to the same episodes at the first
``--noise-decay``, clean accuracy, BitOPs, the search cost in seconds (own work plus each cached item reused
once), the distinct candidates the agent scored and the share of the last third of its episodes that revisited
a policy already scored (means over seeds). HAQ's exploration noise decays by ``noise_decay`` per episode after
the warm-up: at 0.99 its width is 0.5 * 0.99^380 = 0.011 by episode 400 of 600, so the question is whether the
last third still explores. Writes ``episodes.csv`` and ``episodes.png`` under ``--out``.
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

import arqbench
from arqbench.errors import ArqbenchError
from arqbench.pipeline import results
from arqbench.toolkit import AgentSettings

sys.path.insert(0, str(Path(__file__).parent))
from spread import explored  # noqa: E402 (distinct candidates and the last third's revisits, as spread.py counts)
from arqbench.smoothing.intervals import mean_interval, paired_difference

SEARCHES = ("arq", "haq")
DEFAULT_DECAY = AgentSettings.noise_decay
BASELINES = ("uniform", "robust-ilp")
QUICK = {"n0": 10, "n": 100, "test_images": 5, "batch_size": 200, "finetune_epochs": 1,
         "options": {"arq": {"images": 4, "n": 100, "finetune_steps": 1, "warmup": 1},
                     "haq": {"finetune_steps": 1, "warmup": 1}, "robust-ilp": {"images": 4, "n": 100}}}


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="digits-mobilenetv2")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--budget", type=float, default=0.011)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--episodes", default="100,300,600")
    parser.add_argument("--noise-decay", help="the agent's exploration decays per episode to compare, comma list "
                                              "(default: the agent's own)")
    parser.add_argument("--no-search-activations", dest="search_activations", action="store_false")
    parser.add_argument("--baselines", type=Path, help="a results folder holding uniform and robust-ilp cells")
    parser.add_argument("--out", type=Path, default=Path("episodes-results"))
    parser.add_argument("--finetune-recipe", help="as arqbench run's (e.g. bn_freeze=none: the published cells' recipe)")
    parser.add_argument("--quick", action="store_true", help="digits, 2 and 4 episodes, one seed, tiny n")
    args = parser.parse_args(argv)
    if args.quick:
        args.benchmark, args.budget, args.seeds, args.episodes = "digits", 0.05, "0", "2,4"
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.episodes = [int(e) for e in args.episodes.split(",")]
    args.noise_decay = [float(d) for d in args.noise_decay.split(",")] if args.noise_decay else [DEFAULT_DECAY]
    return args


def folder(out: Path, episodes: int, decay: float) -> Path:
    return out / (f"episodes{episodes}" if decay == DEFAULT_DECAY else f"episodes{episodes}-decay{decay:g}")


def published_arm(args, baselines: Path, episodes: int, decay: float) -> Path | None:
    """``baselines`` where it holds the arm at the agents' defaults (episodes and decay) as a leaderboard ran it:
    arq's and haq's cells of every seed, each having searched ``episodes`` episodes; else None (the arm is run)."""
    if args.baselines is None or (episodes, decay) != (AgentSettings.episodes, DEFAULT_DECAY):
        return None
    try:
        found = [cells(baselines, args, method)[0] for method in SEARCHES]
    except ArqbenchError:
        return None
    searched = {(results.read(Path(path)).get("search") or {}).get("episodes") for rows in found for path in rows.path}
    return baselines if searched == {episodes} else None


def exploration(rows: pd.DataFrame) -> tuple[float, float]:
    """Mean over ``rows``' cells of the distinct candidates scored and the last third's share of revisits."""
    measured = [m for m in (explored(results.read(Path(path))) for path in rows.path) if m[0] is not None]
    if not measured:
        return float("nan"), float("nan")
    return (sum(d for d, _ in measured) / len(measured), sum(r for _, r in measured) / len(measured))


def sweep(args, methods, out: Path, decay: float = DEFAULT_DECAY, **settings) -> pd.DataFrame:
    """One ``arqbench run`` of ``methods`` (their agents' noise decaying by ``decay``); its ok cells (fp32 left out)."""
    quick = {k: v for k, v in QUICK.items() if k != "options"} if args.quick else {}
    options = {name: dict(values) for name, values in (QUICK["options"] if args.quick else {}).items()}
    if decay != DEFAULT_DECAY:
        for method in methods:
            options.setdefault(method, {})["noise_decay"] = decay
    frame = arqbench.run(benchmarks=[args.benchmark], methods=list(methods), sigma=args.sigma, budget=args.budget,
                         seed=args.seeds, search_activations=args.search_activations, save_models=False,
                         finetune_recipe=args.finetune_recipe, out=str(out), options=options, **settings, **quick)
    failed = frame[(frame.status != "ok") & frame.method.isin(methods)]
    if len(failed):
        raise ArqbenchError(f"{len(failed)} cells failed under {out}; see their result files")
    return frame


def cells(folder: Path, args, method: str) -> tuple[pd.DataFrame, dict[int, float]]:
    """The cells of ``method`` at this setting in ``folder`` (one per seed) and their per-image radius terms
    averaged over the seeds."""
    rows = arqbench.load_results(folder)
    rows = rows[(rows.benchmark == args.benchmark) & (rows.method == method) & (rows.status == "ok")
                & ((rows.sigma - args.sigma).abs() < 1e-9) & ((rows.budget - args.budget).abs() < 1e-9)
                & rows.seed.isin(args.seeds)]
    if len(rows) > len(set(rows.seed)):
        raise ArqbenchError(f"{folder} holds several {method} cells per seed at sigma {args.sigma}, budget "
                            f"{args.budget} (cells of several protocols, e.g. a quantizer's subfolder): pass the "
                            f"folder of one protocol, such as {Path(folder) / args.benchmark}")
    if sorted(rows.seed) != sorted(args.seeds):
        raise ArqbenchError(f"{folder} lacks {method} cells for seeds {args.seeds} at sigma {args.sigma}, budget "
                            f"{args.budget}")
    images = pd.concat(arqbench.load_certificates(path) for path in rows.path)
    terms = images.assign(r=images.radius.where(images.correct.astype(bool), 0.0)).groupby("index").r.mean()
    return rows, terms.to_dict()


def main(argv: list[str]) -> int:
    args = arguments(argv)
    baselines = args.baselines or args.out / "baselines"
    if args.baselines is None:
        sweep(args, BASELINES, baselines)
    for episodes in args.episodes:
        for decay in args.noise_decay:
            if published_arm(args, baselines, episodes, decay) is None:  # an arm is the defaults and its changes
                sweep(args, SEARCHES, folder(args.out, episodes, decay), decay,
                      **({} if episodes == AgentSettings.episodes else {"episodes": episodes}))
    found = {method: cells(baselines, args, method) for method in BASELINES}
    yardsticks = {method: terms for method, (_, terms) in found.items()}
    base_models = set(found["uniform"][0].base_model)
    table, terms_of = [], []
    for method, decay in ((m, d) for m in SEARCHES for d in args.noise_decay):
        fewest = None
        for episodes in sorted(args.episodes):
            rows, terms = cells(published_arm(args, baselines, episodes, decay) or folder(args.out, episodes, decay),
                                args, method)
            if set(rows.base_model) != base_models or set(terms) != set(yardsticks["uniform"]):
                raise ArqbenchError(f"{method} at {episodes} episodes quantized another base model or certified "
                                    f"other images than {baselines}'s cells: not the same protocol")
            distinct, revisits = exploration(rows)
            acr = mean_interval(list(terms.values()))
            row = {"method": method, "episodes": episodes, "noise_decay": decay, "seeds": len(rows), "acr": acr.mean, "acr_low": acr.low,
                   "acr_high": acr.high, "clean_acc": rows.clean_acc.mean(),
                   "bitops_pct": 100 * rows.bitops_fraction.mean(), "search_s": rows.search_cost_s.mean(),
                   "distinct_candidates": distinct, "last_third_revisits": revisits}
            for name, other in yardsticks.items():
                diff = paired_difference(terms, other)
                row.update({f"vs_{name}": diff.mean, f"vs_{name}_low": diff.low, f"vs_{name}_high": diff.high})
            fewest = fewest or (episodes, terms)
            diff = paired_difference(terms, fewest[1])
            row.update({"vs_fewest": diff.mean, "vs_fewest_low": diff.low, "vs_fewest_high": diff.high,
                        "fewest_episodes": fewest[0]})
            first = terms if decay == args.noise_decay[0] else next(
                t for r, t in zip(table, terms_of) if (r["method"], r["episodes"], r["noise_decay"]) ==
                (method, episodes, args.noise_decay[0]))
            diff = paired_difference(terms, first)
            row.update({"vs_first_decay": diff.mean, "vs_first_decay_low": diff.low,
                        "vs_first_decay_high": diff.high})
            table.append(row)
            terms_of.append(terms)
    frame = pd.DataFrame(table)
    frame.to_csv(args.out / "episodes.csv", index=False)
    figure(frame, yardsticks, args.out / "episodes.png", args)
    for record in frame.to_dict("records"):
        print(f"{record['method']} {record['episodes']:>4} episodes, decay {record['noise_decay']:g}: ACR {record['acr']:.3f} "
              f"[{record['acr_low']:.3f}, {record['acr_high']:.3f}], vs uniform {record['vs_uniform']:+.3f} "
              f"[{record['vs_uniform_low']:+.3f}, {record['vs_uniform_high']:+.3f}], vs robust-ilp "
              f"{record['vs_robust-ilp']:+.3f} [{record['vs_robust-ilp_low']:+.3f}, {record['vs_robust-ilp_high']:+.3f}], "
              f"vs {record['fewest_episodes']} episodes {record['vs_fewest']:+.3f} [{record['vs_fewest_low']:+.3f}, "
              f"{record['vs_fewest_high']:+.3f}], vs decay {args.noise_decay[0]:g} {record['vs_first_decay']:+.3f} "
              f"[{record['vs_first_decay_low']:+.3f}, {record['vs_first_decay_high']:+.3f}], distinct candidates "
              f"{record['distinct_candidates']:.0f}, last third revisits {100 * record['last_third_revisits']:.0f}%, clean {100 * record['clean_acc']:.1f}%, BitOPs {record['bitops_pct']:.2f}%, "
              f"search {record['search_s']:.1f} s")
    print(f"episodes: {len(frame)} (method, episodes) rows over seeds {args.seeds}; wrote {args.out / 'episodes.csv'}")
    return 0


def figure(frame: pd.DataFrame, yardsticks: dict, path: Path, args) -> None:
    """Shipped ACR against episodes per search, with the yardsticks' ACR as horizontal bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, terms in yardsticks.items():
        band = mean_interval(list(terms.values()))
        line = ax.axhline(band.mean, linestyle="--", linewidth=1, label=f"{name} (95% interval shaded)")
        ax.axhspan(band.low, band.high, alpha=0.12, color=line.get_color())
    for (method, decay), rows in frame.groupby(["method", "noise_decay"]):
        ax.errorbar(rows.episodes, rows.acr, yerr=[rows.acr - rows.acr_low, rows.acr_high - rows.acr], marker="o",
                    capsize=3, label=f"{method}, noise decay {decay:g} (shipped, 95% interval)")
    ax.set_xlabel("episodes")
    ax.set_ylabel("ACR of the shipped model")
    ax.set_xticks(sorted(frame.episodes.unique()))
    ax.set_title(f"{args.benchmark}, sigma {args.sigma}, budget {100 * args.budget:g}%: seeds {args.seeds}",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except ArqbenchError as exc:
        print(f"episodes: error: {exc}", file=sys.stderr)
        sys.exit(2)
