"""A sweep: benchmarks x sigmas x budgets x methods x seeds, each cell run once and stored."""

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import plugins
from . import policy as policies
from .config import Protocol, resolve
from .console import console, info, warn
from .errors import ArqbenchError, SkipBenchmark
from .profile import profile_layers
from .protocol import Prepared, config_record, failed_result, prepare, run_cell
from .results import REFERENCE, Cell, read, write


@dataclass
class SweepSpec:
    benchmarks: list[str]
    methods: list[str]
    sigmas: list[float]
    budgets: list[float]
    seeds: list[int]
    out: Path
    overrides: dict = field(default_factory=dict)  # protocol flags given on the command line
    preset: str | None = None
    device: str = "cpu"
    data_root: Path | None = None
    checkpoint: Path | None = None
    force: bool = False


@dataclass
class Outcome:
    done: list[Cell] = field(default_factory=list)
    reused: list[Cell] = field(default_factory=list)
    failed: list[tuple[Cell, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one reason per skipped benchmark/sigma
    seconds: float = 0.0


def check_values(spec: SweepSpec) -> None:
    for sigma in spec.sigmas:
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ArqbenchError(f"--sigma must be a positive number, got {sigma}")
    for budget in spec.budgets:
        if not (0 < budget <= 1):
            raise ArqbenchError(f"--budget must be a fraction of the float cost in (0, 1], got {budget}")
    for kind, names in (("benchmark", spec.benchmarks), ("search", spec.methods)):
        for name in names:
            if kind == "search" and name == REFERENCE:
                continue
            plugins.get(kind, name)
    if spec.device.startswith("cuda") and not torch.cuda.is_available():
        raise ArqbenchError(f"--device {spec.device} requested but CUDA is not available here; use --device cpu")
    if spec.checkpoint is not None and not Path(spec.checkpoint).is_file():
        raise ArqbenchError(f"--checkpoint {spec.checkpoint} does not exist")
    if spec.data_root is not None and not Path(spec.data_root).is_dir():
        raise ArqbenchError(f"--data-root {spec.data_root} is not a directory")


def plan(spec: SweepSpec) -> list[Cell]:
    cells = []
    methods = [m for m in spec.methods if m != REFERENCE]
    for benchmark in spec.benchmarks:
        for sigma in spec.sigmas:
            for seed in spec.seeds:
                cells.append(Cell(benchmark, sigma, None, REFERENCE, seed))
                cells += [Cell(benchmark, sigma, b, m, seed) for b in spec.budgets for m in methods]
    return cells


def check_budgets(benchmark, protocol: Protocol, budgets: list[float]) -> None:
    """Refuse a budget below the cheapest policy the protocol allows, before any work is done."""
    layers = profile_layers(benchmark.build_model(), benchmark.input_shape)
    cost_model = plugins.create("cost_model", protocol.cost_model)
    fixed = policies.fixed_layers(layers, protocol.keep_ends)
    cheapest = cost_model.cost(layers, policies.cheapest_policy(layers, fixed, protocol.search_activations))
    floor = cheapest / cost_model.cost(layers, policies.float_policy(layers))
    for budget in budgets:
        if budget < floor:
            hint = "" if protocol.search_activations else " or add --search-activations"
            raise ArqbenchError(
                f"--budget {budget:g} is below the cheapest allowed policy of {benchmark.name} "
                f"({floor:.4%} of float {protocol.cost_model}); raise the budget{hint}"
            )


def run_sweep(spec: SweepSpec) -> Outcome:
    check_values(spec)
    benchmarks = {name: plugins.create("benchmark", name) for name in spec.benchmarks}
    protocols = {name: resolve(b, spec.overrides, spec.preset) for name, b in benchmarks.items()}
    for name, b in benchmarks.items():
        check_budgets(b, protocols[name], spec.budgets)
    cells = plan(spec)
    todo = [cell for cell in cells if spec.force or not finished(cell, protocols[cell.benchmark], spec.out)]
    outcome = Outcome(reused=[c for c in cells if c not in todo])
    device = torch.device(spec.device)
    start = time.perf_counter()
    prepared: dict[tuple[str, float], Prepared | str] = {}
    for i, cell in enumerate(todo, 1):
        key = (cell.benchmark, cell.sigma)
        if key not in prepared:
            try:
                prepared[key] = prepare(benchmarks[cell.benchmark], cell.sigma, protocols[cell.benchmark], device,
                                        spec.data_root, spec.checkpoint)
            except SkipBenchmark as exc:
                prepared[key] = str(exc)
                outcome.skipped.append(str(exc))
                warn(f"skipped: {exc}")
        if isinstance(prepared[key], str):
            continue
        info(f"[bold]\\[{i}/{len(todo)}][/bold] {cell.label()}")
        protocol = protocols[cell.benchmark]
        try:
            result = run_cell(cell, prepared[key], protocol, device)
            outcome.done.append(cell)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a failing cell is recorded; the sweep goes on
            result = failed_result(cell, protocol, exc)
            outcome.failed.append((cell, result["error"]))
            console.print(f"[red]failed:[/red] {cell.label()}: {result['error']}", highlight=False)
        write(cell.path(spec.out), result)
    outcome.seconds = time.perf_counter() - start
    return outcome


def finished(cell: Cell, protocol: Protocol, out: Path) -> bool:
    """A cell is reused when its file exists, succeeded and was made under the same protocol."""
    path = cell.path(out)
    if not path.exists():
        return False
    result = read(path)
    if result.get("status") != "ok":
        return False
    if result.get("config") != config_record(cell, protocol):
        raise ArqbenchError(
            f"{path} was computed with other settings than this run's; use --force to recompute it "
            f"or choose another --out"
        )
    return True
