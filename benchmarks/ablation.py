"""What did each search-strength change do on its own? arq and haq under a protocol, with one change.

    python benchmarks/ablation.py                    # every arm run here: digits-mobilenetv2, sigma 0.25, 1.1%,
                                                     # activations searched, seeds 0-2
    python benchmarks/ablation.py --from before=leaderboards/results-0.2 \
        --from +episodes=leaderboards/episodes/episodes600 --from 0.3=leaderboards/results \
        --out leaderboards/ablation                # the README's table: published cells where they exist
    python benchmarks/ablation.py --arms before,+selection   # some arms only
    python benchmarks/ablation.py --against 8-step-candidate --arms +final-candidate \
        --from 8-step-candidate=leaderboards/base-models/results \
        --from +final-candidate=leaderboards/candidate-finetune/results \
        --out leaderboards/candidate-finetune      # candidates fine-tuned as the shipped model, against 8 steps
    python benchmarks/ablation.py --quick            # seconds: digits, 2 and 4 episodes, tiny n (checks it runs)

Arms (each an ordinary ``arqbench run`` into ``--out``/<arm>, resumable; the protocol otherwise the benchmark's):

- ``before``: 0.2's protocol: 100 episodes, the search reward's argmax shipped (``rescore_top=0``), the
  batch-statistics fine-tune (``--finetune-recipe bn_freeze=none``), e.g. the published 0.2 cells;
- ``+selection``: before, but arq re-scores its top 5 (its 0.3 default; haq keeps it off, so haq has no row);
- ``+episodes``: before, at 600 episodes;
- ``+fine-tune``: before, with the benchmark's own fine-tune recipe (digits-mobilenetv2: BatchNorm frozen);
- ``0.3``: every default of 0.3, e.g. the re-published cells;
- ``8-step-candidate``: this version's protocol with arq's and haq's candidates fine-tuned 8 steps (the default
  on digits; on digits-mobilenetv2 until 2026-12-07), e.g. leaderboards/base-models;
- ``+final-candidate``: the same with every candidate fine-tuned as the shipped model is (``finetune_steps=final``,
  digits-mobilenetv2's default since).

``--against ARM`` (default ``before``) is the arm every other is paired with.

``--from ARM=FOLDER`` reads an arm's cells from a results folder of that protocol instead of running them.
Cells are matched by benchmark, sigma, budget, method and seed, and must quantize the same base model and
certify the same images. Prints, per method and arm, the shipped ACR with its 95% interval over images (each
image's radius averaged over the seeds), its paired difference to the ``--against`` arm (95% interval, image by image,
``arqbench.smoothing.intervals``), clean accuracy, the models below 50% clean accuracy, and the search cost (s).
Writes ``ablation.csv`` under ``--out``; the last line reads ``ablation <method> <arm> <diff> [<low>, <high>] ...``.
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

import arqbench
from arqbench.errors import ArqbenchError
from arqbench.smoothing.intervals import mean_interval, paired_difference
from episodes import cells  # a method's cells at one setting and their per-image radii, matched the same way

OLD = {"episodes": 100, "finetune_recipe": "bn_freeze=none", "options": {"arq": {"rescore_top": 0}}}
ARMS = {  # arm -> (methods, run settings)
    "before": (("arq", "haq"), OLD),
    "+selection": (("arq",), {**OLD, "options": {}}),
    "+episodes": (("arq", "haq"), {**OLD, "episodes": 600}),
    "+fine-tune": (("arq", "haq"), {**OLD, "finetune_recipe": None}),
    "0.3": (("arq", "haq"), {}),
    "8-step-candidate": (("arq", "haq"), {"options": {"arq": {"finetune_steps": 8}, "haq": {"finetune_steps": 8}}}),
    "+final-candidate": (("arq", "haq"), {"options": {"arq": {"finetune_steps": "final"},
                                                      "haq": {"finetune_steps": "final"}}}),
}
QUICK = {"n0": 10, "n": 100, "test_images": 5, "batch_size": 200, "finetune_epochs": 1,
         "options": {"arq": {"images": 4, "n": 100, "finetune_steps": 1, "warmup": 1, "rescore_images": 8,
                             "rescore_n": 100},
                     "haq": {"finetune_steps": 1, "warmup": 1}}}
COLLAPSED = 0.5  # clean accuracy below this: the fine-tune collapsed


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="digits-mobilenetv2")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--budget", type=float, default=0.011)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--from", dest="given", action="append", default=[], metavar="ARM=FOLDER",
                        help="read an arm's cells from a results folder of its protocol instead of running them")
    parser.add_argument("--arms", default="before,+selection,+episodes,+fine-tune,0.3",
                        help=f"comma list of {', '.join(ARMS)} (the --against arm always)")
    parser.add_argument("--against", default="before", help="the arm the others are paired with")
    parser.add_argument("--out", type=Path, default=Path("ablation-results"))
    parser.add_argument("--quick", action="store_true", help="digits, 2 and 4 episodes, one seed, tiny n")
    args = parser.parse_args(argv)
    if args.quick:
        args.benchmark, args.budget, args.seeds = "digits", 0.05, "0"
    args.seeds = [int(s) for s in args.seeds.split(",")]
    requested = args.arms.split(",")
    given = [text.split("=", 1) for text in args.given]
    wrong = sorted({arm for arm in [*requested, args.against] if arm not in ARMS}
                   | {"=".join(pair) for pair in given if len(pair) != 2 or pair[0] not in ARMS})
    if wrong:
        parser.error(f"an arm is one of {', '.join(ARMS)} (--arms NAME,... and --from ARM=FOLDER), got {', '.join(wrong)}")
    args.arms = [args.against] + [arm for arm in ARMS if arm != args.against and arm in requested]
    args.given = {arm: Path(folder) for arm, folder in given}
    return args


def settings_of(args, arm: str) -> dict:
    settings = dict(ARMS[arm][1])
    if args.quick:  # 2 episodes stand for 100, 4 for 600
        episodes = {100: 2, 600: 4}[settings.get("episodes", 600)]
        options = {name: {**QUICK["options"].get(name, {}), **table} for name, table in
                   {**QUICK["options"], **settings.get("options", {})}.items()}
        settings.update({**QUICK, "episodes": episodes, "options": options})
    return settings


def folder_of(args, arm: str) -> Path:
    if arm in args.given:
        return args.given[arm]
    methods, _ = ARMS[arm]
    frame = arqbench.run(benchmarks=[args.benchmark], methods=list(methods), sigma=args.sigma, budget=args.budget,
                         seed=args.seeds, search_activations=True, save_models=False, out=str(args.out / arm),
                         **settings_of(args, arm))
    failed = frame[(frame.status != "ok") & frame.method.isin(methods)]
    if len(failed):
        raise ArqbenchError(f"{len(failed)} cells failed under {args.out / arm}; see their result files")
    return args.out / arm


def main(argv: list[str]) -> int:
    args = arguments(argv)
    folders = {arm: folder_of(args, arm) for arm in args.arms}
    table = []
    against = args.arms[0]
    for method in ARMS[against][0]:
        base_rows, base = cells(folders[against], args, method)
        for arm in args.arms:
            if method not in ARMS[arm][0]:
                continue
            rows, terms = cells(folders[arm], args, method)
            if set(rows.base_model) != set(base_rows.base_model) or set(terms) != set(base):
                raise ArqbenchError(f"{method} under {folders[arm]} quantized another base model or certified other "
                                    f"images than under {folders[against]}: not comparable")
            acr, diff = mean_interval(list(terms.values())), paired_difference(terms, base)
            table.append({"method": method, "arm": arm, "seeds": len(rows), "acr": acr.mean, "acr_low": acr.low,
                          "acr_high": acr.high, "against": against, "vs_before": diff.mean, "vs_before_low": diff.low,
                          "vs_before_high": diff.high, "clean_acc": rows.clean_acc.mean(),
                          "collapsed": int((rows.clean_acc < COLLAPSED).sum()), "search_s": rows.search_cost_s.mean(),
                          "folder": str(folders[arm])})
    frame = pd.DataFrame(table)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "ablation.csv", index=False)
    for r in frame.to_dict("records"):
        print(f"{r['method']} {r['arm']:<11} ACR {r['acr']:.3f} [{r['acr_low']:.3f}, {r['acr_high']:.3f}], vs {against} "
              f"{r['vs_before']:+.3f} [{r['vs_before_low']:+.3f}, {r['vs_before_high']:+.3f}], clean "
              f"{100 * r['clean_acc']:.1f}%, collapsed {r['collapsed']}/{r['seeds']}, search {r['search_s']:.1f} s")
    print("ablation " + " ".join(f"{r['method']} {r['arm']} {r['vs_before']:+.3f} [{r['vs_before_low']:+.3f}, "
                                 f"{r['vs_before_high']:+.3f}]" for r in table if r["arm"] != against))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except ArqbenchError as exc:
        print(f"ablation: error: {exc}", file=sys.stderr)
        sys.exit(2)
