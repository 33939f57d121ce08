"""Does the protocol's fine-tune recipe decide a row? Each result's policy fine-tuned two ways, side by side.

    python benchmarks/finetune_batchnorm.py leaderboards/results/digits-mobilenetv2/sigma0.25/budget0.0075
    python benchmarks/finetune_batchnorm.py leaderboards/results/digits --seed 0
    python benchmarks/finetune_batchnorm.py RESULTS --quick    # the first cell only (checks it runs)

For every finished quantized cell under the given result folders (``--seed`` keeps one seed), the
cell's policy is quantized and calibrated as its cell was, then fine-tuned as the protocol does
(``arqbench.models.training.train``: the benchmark's recipe, the cell's seed and epochs) twice: with BatchNorm
normalizing by batch statistics (the protocol's recipe) and with BatchNorm frozen to its running statistics
(what ``finetune`` falls back to when the first diverges). Prints the clean test accuracy of each, beside
the accuracy the result file records: one of the two columns reproduces it when run with the thread count
the file records (OMP_NUM_THREADS=1 for the published files) on the same base model: batch statistics, or
frozen where batch statistics diverged (shown as nan). No certification: this isolates the fine-tune.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from arqbench.errors import ArqbenchError
from arqbench.models.training import TrainingDiverged, accuracy, train
from arqbench.pipeline.cell import CellRun
from arqbench.pipeline.config import create_benchmark, known_settings, resolve
from arqbench.pipeline.prepare import prepare
from arqbench.pipeline.results import REFERENCE, Cell, read_all
from arqbench.runtime import keep_freed_memory

def fine_tuned_accuracy(runner: CellRun, result: dict, frozen: bool) -> float:
    """Clean test accuracy of the result's policy after the protocol's fine-tune; NaN if it diverged."""
    model = runner.calibrated({name: tuple(bits) for name, bits in result["policy"].items()})
    prepared, device = runner.prepared, runner.device
    try:
        train(model, prepared.data.finetune, prepared.benchmark.finetune, result["sigma"], device, result["seed"],
              epochs=runner.protocol.finetune_epochs, frozen_batchnorm=frozen, description="fine-tune")
    except TrainingDiverged:
        return float("nan")
    return accuracy(model.eval(), prepared.data.test, device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="result folders (an arqbench run --out, or a folder in one)")
    parser.add_argument("--seed", type=int, help="only this seed's cells")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="only the first cell (in the table's order)")
    args = parser.parse_args()
    keep_freed_memory()
    device = torch.device(args.device)
    cells = [r for path in args.results for r in read_all(path)
             if r["status"] == "ok" and r["method"] != REFERENCE and (args.seed is None or r["seed"] == args.seed)]
    if not cells:
        raise ArqbenchError(f"no finished quantized cell under {', '.join(map(str, args.results))}")
    table = Table(title="clean test accuracy % after the protocol's fine-tune: BatchNorm batch statistics vs frozen")
    for column in ("benchmark", "sigma", "budget", "method", "seed", "recorded", "batch statistics", "frozen"):
        table.add_column(column)
    prepared = {}
    cells = sorted(cells, key=lambda r: (r["benchmark"], r["sigma"], r["budget"], r["method"], r["seed"]))
    for r in cells[:1] if args.quick else cells:
        benchmark = create_benchmark(r["benchmark"])
        protocol = resolve(benchmark, known_settings(r["config"]["protocol"]))
        key = (r["benchmark"], r["sigma"], json.dumps(protocol.as_dict(), sort_keys=True))
        if key not in prepared:
            prepared[key] = prepare(benchmark, r["sigma"], protocol, device)
        runner = CellRun(Cell(r["benchmark"], r["sigma"], r["budget"], r["method"], r["seed"]), prepared[key],
                         protocol, device)
        batch, frozen = (fine_tuned_accuracy(runner, r, f) for f in (False, True))
        table.add_row(r["benchmark"], f"{r['sigma']:g}", f"{100 * r['budget']:g}%", r["method"], str(r["seed"]),
                      f"{100 * r['metrics']['clean_acc']:.1f}", f"{100 * batch:.1f}", f"{100 * frozen:.1f}")
    Console(width=160).print(table)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ArqbenchError as exc:
        sys.exit(f"finetune_batchnorm: {exc}")
