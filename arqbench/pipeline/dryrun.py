"""``arqbench run --dry-run``: the sweep's cells, which are finished, and what the rest will cost, before any work.

Per cell, in noisy forward passes of one input (``arqbench.search.estimate``):

    certify   = test_images * (n0 + n)                        (the final certification; fp32 rows too)
    fine-tune = finetune_epochs * fine-tune images * TRAIN_COST
    search    = the search plugin's ``estimate(workload)``      (0 for a search without one; work it caches
                and shares between cells, its ``Cost.shared``, counted once per base model, in the first cell)

Each is multiplied by the model's MACs (the sum over its layers, ``profile_layers``) and turned into seconds
by the forward throughput of the benchmark's model measured here for about a second (random weights, random
inputs, the certification batch size, on ``--device``). Fake-quantized forwards run slower than that float
forward (measured in the README, Performance), so the time is a lower estimate. Nothing is trained or written: split
sizes come from the data when it is on this machine, else from the benchmark's ``data_sizes``.
"""

import math
import time
from dataclasses import dataclass

import torch
from rich import box
from rich.table import Table

from arqbench import runtime
from arqbench.console import info, print_table
from arqbench.errors import ArqbenchError, SkipBenchmark
from arqbench.models.benchmark import Splits
from arqbench.models.data import ProtocolData
from arqbench.pipeline.config import Protocol
from arqbench.pipeline.results import REFERENCE, Cell
from arqbench.pipeline.sweep import SweepSpec, finished, plan, setup, threads
from arqbench.quantization.layers import profile_layers
from arqbench.search.estimate import TRAIN_COST, Cost, Workload
from arqbench.smoothing.core import SmoothingConfig

PROBE_SECONDS = 1.0


@dataclass
class Estimate:
    cell: Cell
    state: str  # "to run" or "finished"
    search: float = 0.0  # noisy forwards of one input
    finetune: float = 0.0
    certify: float = 0.0
    macs: int = 0  # of one forward
    per_second: float = math.nan  # measured forwards per second

    @property
    def forwards(self) -> float:
        return self.search + self.finetune + self.certify

    @property
    def seconds(self) -> float:
        return self.forwards / self.per_second if self.state == "to run" else 0.0


def sizes(benchmark, protocol: Protocol, data_root) -> tuple[ProtocolData, str]:
    """The protocol's splits, or stand-ins of the benchmark's nominal sizes when its data is not here."""
    try:
        splits, where = benchmark.splits(data_root), "data"
    except SkipBenchmark as exc:
        nominal = getattr(benchmark, "data_sizes", None) or {}
        if not nominal.get("test"):
            raise ArqbenchError(f"--dry-run: {exc}; and {benchmark.name} declares no data_sizes to estimate "
                                f"from") from None
        train = nominal.get("train")
        splits = Splits(train=range(train) if train else None, test=range(nominal["test"]))
        where = f"the benchmark's nominal sizes (its data is not here: {exc})"
    return ProtocolData.from_splits(splits, protocol.test_images, benchmark.search_images, protocol.subset), where


def throughput(benchmark, protocol: Protocol, device: torch.device, seconds: float = PROBE_SECONDS) -> float:
    """Forward passes of single inputs per second: the benchmark's model with random weights on random inputs
    in batches of the certification batch size, for about ``seconds`` after one warm-up batch."""
    model = benchmark.build_model().to(device).eval()
    batch = torch.rand(min(protocol.batch_size, 1024), *benchmark.input_shape, device=device)
    done, start = 0, None
    with torch.inference_mode():
        while start is None or time.perf_counter() - start < seconds:
            model(batch).argmax(1).cpu()
            if start is None:
                start = time.perf_counter()  # the first batch warms up
                continue
            done += len(batch)
    return done / (time.perf_counter() - start)


def state(cell: Cell, protocol: Protocol, spec: SweepSpec) -> str:
    if spec.force:
        return "to run"
    try:
        return "finished" if finished(cell, protocol, spec.out) else "to run"
    except ArqbenchError:
        return "to run"  # made with other settings: run refuses it without --force


def estimate(spec: SweepSpec) -> tuple[list[Estimate], list[str]]:
    """Every cell of the sweep with its estimated cost, and notes on where the numbers come from."""
    benchmarks, protocols = setup(spec)
    device = torch.device(spec.device)
    notes, per_benchmark = [], {}
    for name, benchmark in benchmarks.items():
        protocol = protocols[name]
        data, where = sizes(benchmark, protocol, spec.data_root)
        layers = profile_layers(benchmark.build_model(), benchmark.input_shape)
        with runtime.threads(threads(spec, benchmark)):  # as the run will
            rate = throughput(benchmark, protocol, device)
            count = torch.get_num_threads()
        macs = sum(layer.macs for layer in layers)
        per_benchmark[name] = (data, layers, macs, rate)
        notes.append(f"{name}: {macs / 1e6:.2f}M MACs per forward, {rate:,.0f} forwards/s measured on {device} "
                     f"(batch {min(protocol.batch_size, 1024)}, {count} CPU thread{'s' * (count > 1)}); split sizes "
                     f"from {where}")
    estimates, counted = [], set()
    for cell in plan(spec):
        protocol = protocols[cell.benchmark]
        data, layers, macs, rate = per_benchmark[cell.benchmark]
        smoothing = SmoothingConfig(cell.sigma, protocol.n0, protocol.n, protocol.alpha, protocol.batch_size,
                                    cell.seed, protocol.precision)
        e = Estimate(cell, state(cell, protocol, spec), macs=macs, per_second=rate)
        e.certify = len(data.certify.indices) * (protocol.n0 + protocol.n)
        if cell.method != REFERENCE:
            e.finetune = protocol.finetune_epochs * len(data.finetune) * TRAIN_COST
            search = protocol.create("search", cell.method)
            if callable(getattr(search, "estimate", None)):
                work = Workload(layers, benchmarks[cell.benchmark], protocol, smoothing, cell.budget,
                                len(data.search), len(data.finetune))
                e.search = searched(search.estimate(work), (cell.benchmark, cell.sigma), counted)
        estimates.append(e)
    return estimates, notes


def searched(cost: float | Cost, base_model: tuple, counted: set) -> float:
    """A cell's search forwards: its own, plus the shared work no earlier cell on ``base_model`` counted."""
    if not isinstance(cost, Cost):
        return float(cost)
    new = {key: forwards for key, forwards in cost.shared.items() if (base_model, key) not in counted}
    counted.update((base_model, key) for key in new)
    return float(cost.own + sum(new.values()))


def show(spec: SweepSpec) -> int:
    """Estimate the sweep and print it (``report``); returns the exit status, 0."""
    report(spec, *estimate(spec))
    return 0


def report(spec: SweepSpec, estimates: list[Estimate], notes: list[str]) -> None:
    """The dry run's table (noisy forwards of one input per stage, time here) and its total."""
    several = len({e.cell.benchmark for e in estimates}) > 1
    table = Table(title=f"arqbench run --dry-run: {len(estimates)} cells, results in {spec.out}", box=box.SIMPLE_HEAD, show_edge=False,
                  padding=(0, 1), collapse_padding=True,
                  pad_edge=False, caption="search, fine-tune, certify: noisy forwards of one input")
    columns = ["benchmark"] * several + ["sigma", "budget", "method", "seed", "state", "search", "fine-tune",
                                         "certify", "time"]
    for column in columns:
        numeric = column in ("search", "fine-tune", "certify", "time")
        table.add_column(column, justify="right" if numeric else "left", no_wrap=True)
    for e in estimates:
        c = e.cell
        table.add_row(*[c.benchmark] * several, f"{c.sigma:g}", "" if c.budget is None else f"{c.budget:g}",
                      c.method, str(c.seed), e.state, count(e.search), count(e.finetune), count(e.certify),
                      duration(e.seconds) if e.state == "to run" else "-")
    print_table(table, keep=several + 4)  # benchmark, sigma, budget, method, seed
    todo = [e for e in estimates if e.state == "to run"]
    for note in notes:
        info(note)
    forwards = sum(e.forwards for e in todo)
    macs = sum(e.forwards * e.macs for e in todo)
    info(f"total: {len(todo)} of {len(estimates)} cells to run ({len(estimates) - len(todo)} finished): "
         f"{count(forwards)} noisy forwards, {macs / 1e12:.3g} TMAC, about {duration(sum(e.seconds for e in todo))} "
         f"here (search {count(sum(e.search for e in todo))}, fine-tune {count(sum(e.finetune for e in todo))}, "
         f"certify {count(sum(e.certify for e in todo))} forwards); nothing was run")


def count(value: float) -> str:
    """A number of forwards, short: 950, 12.3k, 4.1M, 2.0G."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.0f}"


def duration(seconds: float) -> str:
    """Seconds, short: 42s, 6.4min, 25.6h, 14.3d."""
    for size, unit in ((86400 * 2, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / (86400 if unit == 'd' else size):.1f}{unit}"
    return f"{seconds:.0f}s"
