"""How many CPU threads should certification use? Each embedded benchmark at 1 and 2 threads, on a quiet
machine and beside a busy neighbour, measured side by side in one run.

    python benchmarks/threads.py             # digits and digits-mobilenetv2: 10 images at n = 10,000, best of 2
    python benchmarks/threads.py --quick     # seconds: 2 images at n = 500, once (checks it runs)

Per benchmark (random weights: the work of certification does not depend on them), the ``rs`` certifier
certifies ``--images`` test images at ``--n`` with the benchmark's batch size, with ``torch.set_num_threads``
1 and then 2, first on the machine as it is ("quiet"), then while a neighbour process spins one core
("busy"). On models this small an operator is short, so an intra-op thread that the OS deschedules stalls
every operator: the second thread pays only where a core is free. The time of each setting is the best of
``--repeats`` runs; the ratio is 2-thread time over 1-thread time (below 1: two threads pay).

The output ends with one line per benchmark, ``threads <benchmark>: 2/1-thread time quiet <x>, busy <y>``.
"""

import argparse
import os
import subprocess
import sys
import time

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import Subset

from arqbench import plugins
from arqbench.pipeline.config import resolve
from arqbench.runtime import keep_freed_memory
from arqbench.smoothing.certification import certify_subset
from arqbench.smoothing.core import SmoothingConfig

BENCHMARKS = ("digits", "digits-mobilenetv2")
THREADS = (1, 2)


def certify_seconds(benchmark, model, subset, config: SmoothingConfig, threads: int, repeats: int) -> float:
    """The best of ``repeats`` certifications of ``subset`` at ``threads`` CPU threads, in seconds."""
    torch.set_num_threads(threads)
    certifier = plugins.create("certifier", "rs")
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        certify_subset(certifier, model, subset, config, benchmark.num_classes)
        best = min(best, time.perf_counter() - start)
    return best


def busy_neighbour() -> subprocess.Popen:
    """Another process spinning one core, as a shared machine has."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmarks", default=",".join(BENCHMARKS))
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 images at n = 500, once (checks it runs)")
    args = parser.parse_args()
    if args.quick:
        args.images, args.n, args.repeats = 2, 500, 1
    keep_freed_memory()  # as the CLI does
    was = torch.get_num_threads()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    console = Console(width=160, highlight=False)
    console.print(f"{os.cpu_count()} CPUs, load average {load} before the run; torch {torch.__version__}, "
                  f"{args.images} images at n = {args.n}, best of {args.repeats}")
    table = Table(title="certification seconds at 1 and 2 CPU threads")
    for column in ("benchmark", "machine", "1 thread", "2 threads", "2/1"):
        table.add_column(column)
    ratios = {}
    for name in args.benchmarks.split(","):
        benchmark = plugins.create("benchmark", name)
        protocol = resolve(benchmark, {})
        torch.manual_seed(0)
        model = benchmark.build_model().eval()
        subset = Subset(benchmark.splits(None).test, range(args.images))
        config = SmoothingConfig(sigma=0.25, n0=protocol.n0, n=args.n, alpha=protocol.alpha,
                                 batch_size=protocol.batch_size, seed=0)
        for threads in THREADS:  # warm up: the first run at a thread count starts its thread pool
            certify_seconds(benchmark, model, Subset(subset.dataset, [0]), config, threads, 1)
        for machine in ("quiet", "busy"):
            neighbour = busy_neighbour() if machine == "busy" else None
            try:
                seconds = {t: certify_seconds(benchmark, model, subset, config, t, args.repeats) for t in THREADS}
            finally:
                if neighbour is not None:
                    neighbour.kill()
                    neighbour.wait()
            ratios[name, machine] = seconds[2] / seconds[1]
            row = (name, machine, f"{seconds[1]:.2f}s", f"{seconds[2]:.2f}s", f"{ratios[name, machine]:.2f}x")
            console.print(" ".join(row))  # as it is measured
            table.add_row(*row)
    torch.set_num_threads(was)
    console.print(table)
    for name in args.benchmarks.split(","):
        console.print(f"threads {name}: 2/1-thread time quiet {ratios[name, 'quiet']:.2f}x, "
                      f"busy {ratios[name, 'busy']:.2f}x")


if __name__ == "__main__":
    main()
