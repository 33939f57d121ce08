"""Which fine-tune recipe collapses fewest models? Each result's policy re-fine-tuned under each recipe.

    python benchmarks/finetune_recipes.py leaderboards/results-0.2/digits-mobilenetv2/sigma0.25/budget0.0075 --seed 0
    python benchmarks/finetune_recipes.py leaderboards/results/digits --recipes protocol,bn-recalibrate
    python benchmarks/finetune_recipes.py RESULTS --quick    # the first cell only, two recipes (checks it runs)

For every finished quantized cell under the given result folders (every method; ``--seed`` keeps one seed),
the cell's policy is quantized, calibrated and fine-tuned as its cell was (``CellRun.quantized_model``: the
benchmark's recipe, the cell's seed and epochs, the divergence fallback) under each recipe of ``RECIPES``
(``arqbench.models.finetune_recipe``: today's protocol, each remedy alone, combinations), and its clean test
accuracy printed beside the one its result file records (a "*" marks a fine-tune that diverged and reran with
BatchNorm frozen). The "protocol" column reproduces the recorded accuracy when run with the thread count the
file records (OMP_NUM_THREADS=1 for the published files) on the same base model. Then per recipe: how many
models collapse (clean accuracy < 50%) and the mean accuracy, over all methods and per method, so a recipe is
chosen for fewest collapses across all methods, never for one. No certification: this isolates the fine-tune.
"""

import argparse
import dataclasses
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from arqbench.errors import ArqbenchError
from arqbench.models.finetune_recipe import FinetuneRecipe
from arqbench.models.training import accuracy
from arqbench.pipeline.cell import CellRun
from arqbench.pipeline.config import create_benchmark, known_settings, resolve
from arqbench.pipeline.prepare import prepare
from arqbench.pipeline.results import REFERENCE, Cell, read_all
from arqbench.runtime import keep_freed_memory

COLLAPSED = 0.5  # clean accuracy below this: a collapsed model
RECIPES = {
    "protocol": FinetuneRecipe(),  # today's recipe (BatchNorm frozen only when the fine-tune diverges)
    "frozen": FinetuneRecipe(bn_freeze=0.0),  # BatchNorm frozen from the start: the fallback as a recipe
    "bn-recalibrate": FinetuneRecipe(bn_recalibrate=True),
    "bn-freeze-0.5": FinetuneRecipe(bn_freeze=0.5),
    "lr-0.1": FinetuneRecipe(lr_scale=0.1),
    "cle": FinetuneRecipe(equalize="exact"),
    "cle-relu6": FinetuneRecipe(equalize="relu6"),
    "recalibrate+freeze-0.5": FinetuneRecipe(bn_recalibrate=True, bn_freeze=0.5),
    "recalibrate+frozen": FinetuneRecipe(bn_recalibrate=True, bn_freeze=0.0),
}
QUICK = ("protocol", "recalibrate+freeze-0.5")


def fine_tuned_accuracy(runner: CellRun, result: dict, recipe: FinetuneRecipe) -> tuple[float, bool]:
    """Clean test accuracy of the result's policy after the protocol's fine-tune under ``recipe``, and whether
    that fine-tune diverged and reran with BatchNorm frozen."""
    runner = dataclasses.replace(runner, protocol=dataclasses.replace(runner.protocol, finetune_recipe=recipe.as_dict()))
    model, tuning = runner.quantized_model({name: tuple(bits) for name, bits in result["policy"].items()})
    return accuracy(model, runner.prepared.data.test, runner.device), tuning["frozen_batchnorm"]


def summary(rows: list[tuple[dict, dict]], names: list[str]) -> Table:
    """Per recipe: collapsed models and mean accuracy, over all cells and per method."""
    methods = sorted({r["method"] for r, _ in rows})
    table = Table(title=f"per recipe: collapsed models (clean accuracy < {100 * COLLAPSED:g}%) of all, mean clean accuracy %")
    for column in ("recipe", "all", *methods):
        table.add_column(column)
    for name in names:
        by_method = defaultdict(list)
        for r, accs in rows:
            by_method[r["method"]].append(accs[name][0])
        every = [a for accs in by_method.values() for a in accs]
        table.add_row(name, *(f"{sum(a < COLLAPSED for a in accs)}/{len(accs)} ({100 * sum(accs) / len(accs):.1f})"
                              for accs in (every, *(by_method[m] for m in methods))))
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="result folders (an arqbench run --out, or a folder in one)")
    parser.add_argument("--seed", type=int, help="only this seed's cells")
    parser.add_argument("--recipes", help=f"comma-separated, of: {', '.join(RECIPES)} (default: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help=f"only the first cell (in the table's order), recipes {', '.join(QUICK)}")
    args = parser.parse_args()
    names = args.recipes.split(",") if args.recipes else list(QUICK if args.quick else RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise ArqbenchError(f"unknown recipe(s) {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    keep_freed_memory()
    device = torch.device(args.device)
    cells = [r for path in args.results for r in read_all(path)
             if r["status"] == "ok" and r["method"] != REFERENCE and (args.seed is None or r["seed"] == args.seed)]
    if not cells:
        raise ArqbenchError(f"no finished quantized cell under {', '.join(map(str, args.results))}")
    cells = sorted(cells, key=lambda r: (r["benchmark"], r["sigma"], r["budget"], r["method"], r["seed"]))
    table = Table(title="clean test accuracy % after the protocol's fine-tune, per recipe (* diverged, reran with "
                        "BatchNorm frozen)")
    for column in ("benchmark", "sigma", "budget", "method", "seed", "recorded", *names):
        table.add_column(column)
    prepared, rows = {}, []
    for r in cells[:1] if args.quick else cells:
        benchmark = create_benchmark(r["benchmark"])
        protocol = resolve(benchmark, known_settings(r["config"]["protocol"]))
        key = (r["benchmark"], r["sigma"], json.dumps(protocol.as_dict(), sort_keys=True))
        if key not in prepared:
            prepared[key] = prepare(benchmark, r["sigma"], protocol, device)
        runner = CellRun(Cell(r["benchmark"], r["sigma"], r["budget"], r["method"], r["seed"]), prepared[key],
                         protocol, device)
        accs = {name: fine_tuned_accuracy(runner, r, RECIPES[name]) for name in names}
        rows.append((r, accs))
        table.add_row(r["benchmark"], f"{r['sigma']:g}", f"{100 * r['budget']:g}%", r["method"], str(r["seed"]),
                      f"{100 * r['metrics']['clean_acc']:.1f}",
                      *(f"{100 * a:.1f}{'*' if fell_back else ''}" for a, fell_back in accs.values()))
        print(f"[{len(rows)}/{1 if args.quick else len(cells)}] {r['benchmark']} sigma {r['sigma']:g} "
              f"budget {100 * r['budget']:g}% {r['method']} seed {r['seed']}", flush=True)
    console = Console(width=220)
    console.print(table)
    console.print(summary(rows, names))
    fewest = min(names, key=lambda n: (sum(accs[n][0] < COLLAPSED for _, accs in rows),
                                       -sum(accs[n][0] for _, accs in rows)))
    collapsed = sum(accs[fewest][0] < COLLAPSED for _, accs in rows)
    print(f"fewest collapsed models: {fewest} ({collapsed} of {len(rows)}; ties broken by mean accuracy)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ArqbenchError as exc:
        sys.exit(f"finetune_recipes: {exc}")
