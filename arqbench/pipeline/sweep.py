"""A sweep: benchmarks x sigmas x budgets x methods x seeds, each cell run once and stored."""

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from scipy.stats import norm

from arqbench import plugins, runtime
from arqbench.console import debug, failed, info, warn
from arqbench.errors import ArqbenchError, Busy, SkipBenchmark
from arqbench.files import check_output_dir, remove_stale_temps
from arqbench.models import published
from arqbench.models.base_model import load_checkpoint
from arqbench.pipeline import executors, saved
from arqbench.pipeline.cell import config_record, failed_result
from arqbench.pipeline.config import SHARED, Protocol, create_benchmark, resolve
from arqbench.pipeline.prepare import Prepared, prepare
from arqbench.pipeline.results import REFERENCE, Cell, claim, read, write
from arqbench.quantization import policy as policies
from arqbench.quantization.layers import profile_layers
from arqbench.smoothing.core import max_certified_radius


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
    base_models: Path | None = None  # --base-models: a folder of published base models (models.published)
    normalization: str | None = None  # --normalization: what the checkpoint's network was trained with
    force: bool = False
    command: str | None = None  # the command line, recorded in every result
    executor: str = "local"  # "local" or "ray" (arqbench.pipeline.executors)
    address: str | None = None  # Ray cluster address
    cpus_per_task: float = 1
    gpus_per_task: float = 0
    certify_shards: int = 1  # Ray tasks (local: slices) one cell's final certification is split into
    workers: int = 0  # DataLoader worker processes
    threads: int | None = None  # --threads: CPU threads (None: each benchmark's preference, runtime.thread_count)
    save_models: bool = True  # each quantized cell's model beside its result (arqbench.pipeline.saved)
    settings: dict | None = None  # the resolved run settings (flags and --config file), recorded in every result


@dataclass
class Outcome:
    done: list[Cell] = field(default_factory=list)
    reused: list[Cell] = field(default_factory=list)
    failed: list[tuple[Cell, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one reason per skipped benchmark/sigma
    waited: list[Cell] = field(default_factory=list)  # found claimed by another process, waited for
    seconds: float = 0.0


MAX_SEED = 2**32 - 1  # numpy's legacy seeding (stable-baselines3's set_random_seed) takes no more


def check_values(benchmarks=(), methods=(), sigmas=(), budgets=(), device="cpu", executor="local",
                 checkpoint: Path | None = None, data_root: Path | None = None, seeds=(),
                 out: Path | None = None) -> None:
    """Refuse a wrong name, value or path before any work, with one line each."""
    for seed in seeds:
        if not 0 <= seed <= MAX_SEED:
            raise ArqbenchError(f"--seed must be an integer in [0, {MAX_SEED}], got {seed}")
    for sigma in sigmas:
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ArqbenchError(f"--sigma must be a positive number, got {sigma}")
    for budget in budgets:
        if not (0 < budget <= 1):
            raise ArqbenchError(f"--budget must be a fraction of the float cost in (0, 1], got {budget}")
    for kind, names in (("benchmark", benchmarks), ("search", methods)):
        for name in names:
            if kind == "search" and name == REFERENCE:
                continue
            plugins.get(kind, name)
    try:
        kind = torch.device(device).type
    except RuntimeError:
        kind = None
    if kind not in ("cpu", "cuda"):  # torch also names devices arqbench does not run on (meta, mps, xpu, ...)
        raise ArqbenchError(f"--device expects cpu, cuda or cuda:N, got '{device}'")
    if kind == "cuda" and executor == "local":
        if not torch.cuda.is_available():
            raise ArqbenchError(f"--device {device} requested but CUDA is not available here; use --device cpu")
        index = torch.device(device).index
        if index is not None and index >= torch.cuda.device_count():
            raise ArqbenchError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if checkpoint is not None and not Path(checkpoint).is_file():
        what = "is not a file" if Path(checkpoint).exists() else "does not exist"
        raise ArqbenchError(f"--checkpoint {checkpoint} {what}; pass a checkpoint file")
    if data_root is not None and not Path(data_root).is_dir():
        raise ArqbenchError(f"--data-root {data_root} is not a directory")
    if out is not None:
        check_output_dir(out, "--out")


def warn_uncertifiable(benchmark, sigma: float, protocol: Protocol) -> None:
    """One line naming the radii of the benchmark's grid beyond the largest radius CERTIFY can return at this n
    (``max_certified_radius``): their certified accuracy is 0 whatever the model."""
    cap = max_certified_radius(sigma, protocol.n, protocol.alpha)
    beyond = [r for r in benchmark.radii if r > cap]
    if not beyond:
        return
    needed = math.ceil(math.log(protocol.alpha) / norm.logcdf(beyond[0] / sigma))
    largest = "every certificate abstains" if cap <= 0 else f"the largest certifiable radius is {cap:.3g}"
    warn(f"{benchmark.name} sigma={sigma:g}: radii {', '.join(f'{r:g}' for r in beyond)} cannot be certified with "
         f"n={protocol.n} at alpha={protocol.alpha:g} ({largest}); certifying {beyond[0]:g} needs --n {needed} or more")


def plan(spec: SweepSpec) -> list[Cell]:
    """Every cell of the sweep once, in run order; two values that would share a result file are an error."""
    cells = []
    methods = [m for m in spec.methods if m != REFERENCE]
    for benchmark in spec.benchmarks:
        for sigma in spec.sigmas:
            for seed in spec.seeds:
                cells.append(Cell(benchmark, sigma, None, REFERENCE, seed))
                cells += [Cell(benchmark, sigma, b, m, seed) for b in spec.budgets for m in methods]
    unique: dict[Path, Cell] = {}
    for cell in cells:
        other = unique.setdefault(cell.path(spec.out), cell)
        if other != cell:
            name, a, b = next((f, getattr(other, f), getattr(cell, f)) for f in ("sigma", "budget")
                              if getattr(other, f) != getattr(cell, f))
            raise ArqbenchError(f"--{name} values {a!r} and {b!r} would share the result file "
                                f"{cell.path(spec.out)}; give values that differ within 6 significant digits")
    return list(unique.values())


def check_plugins(protocol: Protocol, methods: list[str]) -> None:
    """Refuse unknown plugin names, options no plugin of that name takes, and options a plugin rejects,
    before any work is done. Shared options (``"*"``, set by alias flags) are checked with every plugin
    that takes them: a search may build other plugins (``arq`` its certifier) with the run's options."""
    used = [(kind, getattr(protocol, kind)) for kind in ("quantizer", "certifier", "cost_model")]
    used += [("search", m) for m in methods if m != REFERENCE]
    for kind, name in used:
        plugins.get(kind, name)
    for name, options in protocol.options.items():
        if name == SHARED:
            continue
        kinds = plugins.kinds_of(name)
        if not kinds:
            raise ArqbenchError(f"--option {name}.KEY=VALUE names no registered plugin; see `arqbench list`")
        accepted = {key for kind in kinds for key in plugins.option_signature(kind, name)}
        if not set(options) <= accepted:
            plugins.resolve_options(kinds[0], name, options)  # raises, listing the valid keys
    shared = set(protocol.options.get(SHARED, {}))
    takers = [(kind, name) for kind, entries in plugins.registries().items() for name in entries
              if kind != "benchmark" and shared & set(plugins.option_signature(kind, name))]
    named = [(kind, name) for name in protocol.options if name != SHARED for kind in plugins.kinds_of(name)
             if kind != "benchmark"]
    for kind, name in dict.fromkeys(used + takers + named):
        try:
            protocol.create(kind, name)
        except ArqbenchError:
            raise
        except Exception:  # a plugin that cannot even be built fails its cells, with the reason, later
            pass


def check_budgets(benchmark, protocol: Protocol, budgets: list[float]) -> None:
    """Refuse a budget below the cheapest policy the protocol allows, before any work is done."""
    layers = profile_layers(benchmark.build_model(), benchmark.input_shape)
    cost_model = protocol.create("cost_model", protocol.cost_model)
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


def setup(spec: SweepSpec) -> tuple[dict, dict[str, Protocol]]:
    """Every value, name and option of the sweep checked, before any work: each benchmark's plugin object
    and protocol, by benchmark name."""
    check_values(spec.benchmarks, spec.methods, spec.sigmas, spec.budgets, spec.device, spec.executor,
                 spec.checkpoint, spec.data_root)
    published.check_folder(spec.base_models)
    benchmarks = {name: create_benchmark(name, spec.overrides.get("options")) for name in spec.benchmarks}
    if spec.checkpoint is not None:  # a checkpoint that cannot be this benchmark's model is refused first
        for benchmark in benchmarks.values():
            load_checkpoint(benchmark, benchmark.build_model(), spec.checkpoint, spec.normalization)
    protocols = {name: one_base_model(resolve(b, spec.overrides, spec.preset), spec)
                 for name, b in benchmarks.items()}
    for protocol in protocols.values():
        runtime.check_precision(torch.device(spec.device), protocol.precision)
    for name, b in benchmarks.items():
        check_plugins(protocols[name], spec.methods)
        check_budgets(b, protocols[name], spec.budgets)
    return benchmarks, protocols


def one_base_model(protocol: Protocol, spec: SweepSpec) -> Protocol:
    """A given ``--checkpoint`` is one network: every seed quantizes it (``base_seeds`` shared, where the benchmark
    defaulted to per-seed); asking for per-seed base models with it is a mistake."""
    if spec.checkpoint is None or protocol.base_seeds == "shared":
        return protocol
    if spec.overrides.get("base_seeds") is not None:
        raise ArqbenchError(f"--base-seeds per-seed trains a base model per seed, but --checkpoint {spec.checkpoint} "
                            f"is one network; drop one of them")
    return replace(protocol, base_seeds="shared")


def run_sweep(spec: SweepSpec) -> Outcome:
    """Run every unfinished cell of the sweep on ``spec.executor`` and store one result file per cell.

    Each cell is claimed before it runs (``results.claim``) and its result written atomically before
    the claim is released, so a killed sweep loses only the cells in flight and a re-run picks them
    up; two sweeps on one ``--out`` share the work. A cell claimed by another process is left to it
    and waited for after the other cells: when the claim is released it is reused if the other
    process finished it, else run here. So is a cell whose search finds shared work it needs (a sensitivity
    profile) being computed by another process (``errors.Busy``): it is retried, waiting, after the other
    cells. A failing cell is recorded with its reason; the sweep goes on.
    """
    check_values(spec.benchmarks, spec.methods, spec.sigmas, spec.budgets, spec.device, spec.executor,
                 spec.checkpoint, spec.data_root, spec.seeds, spec.out)
    executor = executors.create(spec.executor, spec.device, spec.certify_shards, spec.address, spec.cpus_per_task,
                                spec.gpus_per_task, spec.data_root, spec.checkpoint,
                                spec.normalization, spec.base_models)
    benchmarks, protocols = setup(spec)
    cells = plan(spec)
    done = {cell for cell in cells if not spec.force and finished(cell, protocols[cell.benchmark], spec.out)}
    outcome = Outcome()
    start = time.perf_counter()
    prepared = prepare_all(spec, benchmarks, protocols, cells, outcome)
    if outcome.skipped and not done and all(isinstance(p, str) for p in prepared.values()):
        raise ArqbenchError("nothing to run: " + "; ".join(dict.fromkeys(outcome.skipped)))
    for reason in outcome.skipped:
        warn(f"skipped: {reason}")
    base = {cell: prepared[base_key(cell, protocols)] for cell in cells}
    fingerprint = {cell: getattr(base[cell], "fingerprint", None) for cell in cells}
    for name, sigma in dict.fromkeys(key[:2] for key, ready in prepared.items() if isinstance(ready, Prepared)):
        warn_uncertifiable(benchmarks[name], sigma, protocols[name])
    for cell in done:  # a finished cell made from another base model is not this run's
        finished(cell, protocols[cell.benchmark], spec.out, fingerprint[cell])
    outcome.reused = [c for c in cells if c in done]
    runnable = [c for c in cells if c not in done and fingerprint[c] is not None]
    remove_stale_temps(spec.out)
    held: dict[Cell, object] = {}  # cell -> its claim, until its result is written
    deferred: list[Cell] = []  # claimed by another process, or busy (errors.Busy): run after the others
    busy: set[Cell] = set()
    numbers: dict[Cell, int] = {}  # progress positions, in the order this process starts cells

    def claimed(cells: list[Cell], wait: bool):
        """Tasks for the cells this process could claim and that are still unfinished."""
        for cell in cells:
            lock = claim(cell.path(spec.out), wait)
            if lock is None:
                deferred.append(cell)
                info(f"{cell.label()} is being run by another arqbench process; waiting for it after the other cells")
                continue
            held[cell] = lock
            if not spec.force and finished(cell, protocols[cell.benchmark], spec.out, fingerprint[cell]):
                held.pop(cell).release()  # the other process finished it
                outcome.reused.append(cell)
                continue
            yield executors.Task(cell, protocols[cell.benchmark], base[cell],
                                 numbers.setdefault(cell, len(numbers) + 1), len(runnable),
                                 saved.model_path(cell.path(spec.out)) if spec.save_models else None,
                                 wait_for_shared=wait, threads=threads(spec, benchmarks[cell.benchmark]))

    try:
        with executor:
            for task, result in executor.run(claimed(runnable, wait=False)):
                if isinstance(result, Busy):  # its shared work is under way elsewhere: retry it with the waited
                    held.pop(task.cell).release()
                    deferred.append(task.cell)
                    busy.add(task.cell)
                    info(f"{task.cell.label()}: {result}; running it after the other cells")
                    continue
                record(task, result, spec, outcome, held)
            retry, deferred[:] = list(deferred), []
            outcome.waited = [cell for cell in retry if cell not in busy]
            for task, result in executor.run(claimed(retry, wait=True)):
                record(task, result, spec, outcome, held)
    finally:
        for lock in held.values():
            lock.release()
    outcome.seconds = time.perf_counter() - start
    return outcome


def base_key(cell: Cell, protocols: dict) -> tuple[str, float, int]:
    """(benchmark, sigma, base-model seed): what the cells sharing one base model share."""
    return cell.benchmark, cell.sigma, protocols[cell.benchmark].base_seed(cell.seed)


def prepare_all(spec: SweepSpec, benchmarks: dict, protocols: dict, cells: list[Cell],
                outcome: Outcome) -> dict[tuple[str, float, int], Prepared | str]:
    """Each (benchmark, sigma, base-model seed) of the sweep prepared, or the reason it is skipped (also in
    ``outcome``, warned about by the caller; a sweep with nothing left to run is an error).
    Under Ray the driver prepares on the CPU: only to check data and base model, and train a missing one."""
    device = torch.device(spec.device if spec.executor == "local" else "cpu")
    prepared: dict[tuple[str, float, int], Prepared | str] = {}
    for cell in cells:
        key = base_key(cell, protocols)
        if key in prepared:
            continue
        try:
            with runtime.threads(threads(spec, benchmarks[cell.benchmark])):  # a base model may be trained here
                prepared[key] = prepare(benchmarks[cell.benchmark], cell.sigma, protocols[cell.benchmark], device,
                                        data_root=spec.data_root, checkpoint=spec.checkpoint,
                                        normalization=spec.normalization, workers=spec.workers, base_seed=key[2],
                                        base_models=spec.base_models)
        except SkipBenchmark as exc:
            prepared[key] = str(exc)
            outcome.skipped.append(str(exc))
    return prepared


def threads(spec: SweepSpec, benchmark) -> int | None:
    """The CPU thread count of ``benchmark``'s work in this sweep (``runtime.thread_count``)."""
    return runtime.thread_count(torch.device(spec.device), spec.threads, benchmark)


def record(task: executors.Task, result: dict | Exception, spec: SweepSpec, outcome: Outcome, held: dict) -> None:
    """Store a cell's result (a failure as its reason), then release the cell's claim."""
    cell = task.cell
    if isinstance(result, Exception):
        result = failed_result(cell, task.protocol, result)
        outcome.failed.append((cell, result["error"]))
        failed(f"{cell.label()}: {result['error']}")
        debug(result["traceback"])  # with --debug; the result file keeps it for `arqbench show`
    else:
        outcome.done.append(cell)
    if spec.command:
        result = {**result, "command": spec.command}
    if spec.settings:
        result = {**result, "run_config": spec.settings}
    if "model" not in result:  # a model file left from an earlier run of this cell is not this result's
        saved.model_path(cell.path(spec.out)).unlink(missing_ok=True)
    write(cell.path(spec.out), result)
    held.pop(cell).release()


def finished(cell: Cell, protocol: Protocol, out: Path, fingerprint: str | None = None) -> bool:
    """A cell is reused when its file exists, succeeded and was made under the same protocol (and, given
    its ``fingerprint``, from the same base model); a finished cell made otherwise is an error."""
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
    theirs = (result.get("base_model") or {}).get("fingerprint")
    if fingerprint is not None and theirs != fingerprint:
        raise ArqbenchError(
            f"{path} was computed from another base model (fingerprint {theirs}, this run's {fingerprint}); "
            f"use --force to recompute it or choose another --out"
        )
    return True
