"""Where a sweep's cells run: ``local`` (this process, one after another) or ``ray`` (tasks on a Ray cluster).

An executor takes ``Task``s and yields ``(task, result record or exception)`` as cells finish; the
sweep (``arqbench.pipeline.sweep``) claims cells, writes every result and counts failures. Both run a cell
through ``arqbench.pipeline.cell.CellRun``: ``train`` (search + fine-tune) once, then ``certify`` on
``certify_shards`` contiguous slices of the certification subset, merged in subset order by ``record``.
Certificates are seeded per example, so the merged record equals an unsharded run's (timings aside).

Ray is an optional extra, imported only when ``--executor ray`` is asked for. Under Ray a worker
prepares its (benchmark, sigma) itself, memoised per worker process, from the same cache home
(``ARQBENCH_HOME`` and ``ARQBENCH_PLUGINS`` reach the workers through the runtime env), and checks
that its base model is the driver's by fingerprint.
"""

import functools
import os
import socket
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator

import torch

from arqbench import runtime
from arqbench.console import console, info
from arqbench.errors import ArqbenchError
from arqbench.files import home
from arqbench.pipeline import failures
from arqbench.pipeline.cell import CellRun, Trained
from arqbench.pipeline.config import Protocol
from arqbench.pipeline.prepare import Prepared, prepare
from arqbench.pipeline.results import Cell
from arqbench.runtime import keep_freed_memory

RAY_INSTALL = "pip install 'arqbench[ray]'"


@dataclass
class Task:
    """One cell to run, with its protocol and its (benchmark, sigma) prepared by the sweep."""

    cell: Cell
    protocol: Protocol
    prepared: Prepared
    number: int = 0  # position in the sweep, for progress lines
    total: int = 0
    model_path: Path | None = None  # where the cell's quantized model is saved (None: not saved)
    wait_for_shared: bool = True  # False: a search raises errors.Busy rather than wait (local executor only)
    threads: int | None = None  # CPU threads of the cell's work (None: torch's setting; runtime.thread_count)

    def runner(self, device) -> CellRun:
        return CellRun(self.cell, self.prepared, self.protocol, torch.device(device), self.model_path,
                       self.wait_for_shared)


def create(name: str, device: str, certify_shards: int = 1, address: str | None = None,
           cpus_per_task: float = 1, gpus_per_task: float = 0, data_root: Path | None = None,
           checkpoint: Path | None = None, normalization: str | None = None, base_models: Path | None = None):
    """The executor for ``--executor NAME``; every setting is checked here, before any work is done."""
    if certify_shards < 1:
        raise ArqbenchError(f"--certify-shards must be a positive integer, got {certify_shards}")
    if name == "local":
        if address is not None:
            raise ArqbenchError("--address names a Ray cluster; add --executor ray")
        return LocalExecutor(torch.device(device), certify_shards)
    if name == "ray":
        if not cpus_per_task > 0:
            raise ArqbenchError(f"--cpus-per-task must be > 0, got {cpus_per_task}")
        if not gpus_per_task >= 0:
            raise ArqbenchError(f"--gpus-per-task must be >= 0, got {gpus_per_task}")
        if device.startswith("cuda") and gpus_per_task == 0:
            raise ArqbenchError(f"--device {device} with --executor ray needs GPUs per task; add --gpus-per-task 1")
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ArqbenchError(f"--executor ray needs Ray, which is not installed; {RAY_INSTALL}") from None
        return RayExecutor(device, certify_shards, address, cpus_per_task, gpus_per_task, data_root, checkpoint,
                           normalization, base_models)
    raise ArqbenchError(f"unknown executor '{name}'; available: local, ray")


def shards(task: Task, certify_shards: int) -> int:
    """How many slices a cell's certification is split into: at most one per certified image."""
    return max(1, min(certify_shards, len(task.prepared.data.certify.indices)))


def attempt(fn, *args):
    """``fn(*args)``, or the exception it raised: one cell's failure must not stop the sweep."""
    try:
        return fn(*args)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # after an out-of-memory error the next cell starts clean
        return exc


class LocalExecutor:
    """Every cell in this process, one after another (shards, if asked for, one after another too)."""

    def __init__(self, device: torch.device, certify_shards: int = 1):
        self.device, self.certify_shards = device, certify_shards

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def run(self, tasks: Iterable[Task]) -> Iterator[tuple[Task, dict | Exception]]:
        for task in tasks:
            info(task.cell.label(), prefix=f"[bold]\\[{task.number}/{task.total}][/bold] ")
            yield task, attempt(self.run_one, task)

    def run_one(self, task: Task) -> dict:
        with runtime.threads(task.threads):
            return task.runner(self.device).run(shards=shards(task, self.certify_shards))


@dataclass(frozen=True)
class Job:
    """What a Ray worker needs to rebuild a task's (benchmark, sigma) and run its cell."""

    cell: Cell
    protocol: Protocol
    device: str
    data_root: Path | None
    checkpoint: Path | None
    normalization: str | None  # --normalization
    fingerprint: str  # the driver's base model: the worker's must be the same
    workers: int
    threads: int | None = None  # CPU threads of the cell's work (Task.threads)
    base_models: Path | None = None  # --base-models


_PREPARED: dict[tuple, Prepared] = {}  # per worker process: the last few (benchmark, sigma) prepared


def _prepared(job: Job) -> Prepared:
    base_seed = job.protocol.base_seed(job.cell.seed)
    key = (job.cell.benchmark, job.cell.sigma, base_seed, job.protocol.test_images, job.protocol.subset, job.device,
           job.data_root, job.checkpoint, job.normalization, job.base_models)
    if key not in _PREPARED:
        keep_freed_memory()  # as the CLI does: without it certification in a worker is 2x slower
        if len(_PREPARED) >= 2:
            _PREPARED.pop(next(iter(_PREPARED)))
        benchmark = job.protocol.create("benchmark", job.cell.benchmark)
        _PREPARED[key] = prepare(benchmark, job.cell.sigma, job.protocol, torch.device(job.device), data_root=job.data_root,
                                 checkpoint=job.checkpoint, normalization=job.normalization, workers=job.workers,
                                 base_seed=base_seed, base_models=job.base_models)
    prepared = _PREPARED[key]
    if prepared.fingerprint != job.fingerprint:
        raise ArqbenchError(
            f"the base model on Ray worker {socket.gethostname()} (fingerprint {prepared.fingerprint}) is not the "
            f"driver's ({job.fingerprint}); point ARQBENCH_HOME at a directory every node shares, or pass --checkpoint"
        )
    return prepared


def _console_lines(fn):
    """Run a Ray task's body with the console captured, then print what it said without the blank lines
    progress bars leave on a non-terminal (Ray forwards each worker line to the driver, prefixed)."""

    @functools.wraps(fn)
    def run(*args):
        try:
            with console.capture() as captured:
                return fn(*args)
        except Exception as exc:  # its traceback does not survive the trip to the driver: keep it on it
            raise failures.annotate(exc)
        finally:
            lines = [line for line in captured.get().splitlines() if line.strip()]
            if lines:
                print("\n".join(lines), file=sys.stderr)
    return run


@_console_lines
def _train_remote(job: Job) -> tuple[Trained, torch.nn.Module | None]:
    """Ray task: search + fine-tune; the model travels apart (None for the fp32 row: workers have it)."""
    with runtime.threads(job.threads):
        prepared = _prepared(job)
        trained = CellRun(job.cell, prepared, job.protocol, torch.device(job.device)).train()
    model = None if trained.model is prepared.model else trained.model.cpu()
    return replace(trained, model=None), model


@_console_lines
def _certify_remote(job: Job, model: torch.nn.Module | None, shard: tuple[int, int]) -> tuple[list, float, float]:
    """Ray task: certify one slice of the certification subset."""
    with runtime.threads(job.threads):
        prepared = _prepared(job)
        model = prepared.model if model is None else model.to(torch.device(job.device)).eval()
        return CellRun(job.cell, prepared, job.protocol, torch.device(job.device)).certify(model, shard)


class RayExecutor:
    """Cells as Ray tasks: one task per cell for search + fine-tune, one per certification shard.

    Uses the Ray this process already runs, else joins ``address`` (``auto``: the cluster ``ray start``
    made on this machine; ``HOST:PORT``; ``ray://HOST:PORT``), else starts a private local Ray on
    127.0.0.1 for the run. At most as many cells are in flight as the cluster has room for tasks,
    so cells are claimed only when they can start.
    """

    def __init__(self, device: str, certify_shards: int, address: str | None, cpus_per_task: float,
                 gpus_per_task: float, data_root: Path | None = None, checkpoint: Path | None = None,
                 normalization: str | None = None, base_models: Path | None = None):
        import ray

        self.ray, self.device, self.certify_shards, self.address = ray, device, certify_shards, address
        self.data_root, self.checkpoint, self.normalization = data_root, checkpoint, normalization
        self.base_models = base_models
        self.resources = {"num_cpus": cpus_per_task, "num_gpus": gpus_per_task}
        self.started = False

    def __enter__(self):
        ray = self.ray
        if not ray.is_initialized():
            where = {"address": self.address} if self.address else {"address": "local", "_node_ip_address": "127.0.0.1"}
            try:
                ray.init(**where, include_dashboard=False, logging_level="WARNING")
            except Exception as exc:  # a wrong address, an unreachable cluster
                where = self.address or "a new local cluster"
                raise ArqbenchError(f"could not start or reach Ray at {where}: {type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
            self.started = True
        return self

    def __exit__(self, *exc):
        if self.started:
            self.ray.shutdown()
            self.started = False
        return False

    def slots(self) -> int:
        """How many tasks the cluster can run at once with the requested resources."""
        have = self.ray.cluster_resources()
        slots = int(have.get("CPU", 0) // self.resources["num_cpus"])
        if self.resources["num_gpus"]:
            slots = min(slots, int(have.get("GPU", 0) // self.resources["num_gpus"]))
        if slots < 1:
            raise ArqbenchError(
                f"the Ray cluster has {have.get('CPU', 0):g} CPUs and {have.get('GPU', 0):g} GPUs; a task asks for "
                f"{self.resources['num_cpus']:g} CPUs and {self.resources['num_gpus']:g} GPUs "
                f"(--cpus-per-task, --gpus-per-task)"
            )
        return slots

    def run(self, tasks: Iterable[Task]) -> Iterator[tuple[Task, dict | Exception]]:
        ray = self.ray
        env = {"ARQBENCH_HOME": str(home().resolve())}
        if os.environ.get("ARQBENCH_PLUGINS") is not None:
            env["ARQBENCH_PLUGINS"] = os.environ["ARQBENCH_PLUGINS"]
        options = {**self.resources, "runtime_env": {"env_vars": env}}
        train = ray.remote(_train_remote).options(num_returns=2, **options)
        certify = ray.remote(_certify_remote).options(**options)
        window = self.slots()
        tasks = iter(tasks)
        running: dict[int, tuple] = {}  # id -> (task, trained ref, model ref, shard refs)
        owner: dict = {}  # ref -> id
        exhausted = False
        while running or not exhausted:
            while not exhausted and len(running) < window:
                task = next(tasks, None)
                if task is None:
                    exhausted = True
                    break
                job = Job(task.cell, task.protocol, self.device, self.data_root, self.checkpoint,
                          self.normalization, task.prepared.fingerprint, task.prepared.data.workers, task.threads,
                          self.base_models)
                trained_ref, model_ref = train.remote(job)
                parts = shards(task, self.certify_shards)
                shard_refs = [certify.remote(job, model_ref, (k, parts)) for k in range(parts)]
                running[id(task)] = (task, trained_ref, model_ref, shard_refs)
                for ref in [trained_ref, *shard_refs]:
                    owner[ref] = id(task)
                info(f"{task.cell.label()} (Ray, {len(shard_refs)} certification shard{'s' * (len(shard_refs) > 1)})",
                     prefix=f"[bold]\\[{task.number}/{task.total}][/bold] ")
            if not running:
                break
            ready, _ = ray.wait(list(owner), num_returns=1)
            key = owner.pop(ready[0])
            task, trained_ref, model_ref, shard_refs = running[key]
            if any(owner.get(ref) == key for ref in [trained_ref, *shard_refs]):
                continue  # this cell still has work in flight
            del running[key]
            yield task, attempt(self.collect, task, trained_ref, model_ref, shard_refs)

    def collect(self, task: Task, trained_ref, model_ref, shard_refs) -> dict:
        """The cell's record (the model comes back to be saved beside it); a task's exception is re-raised as
        itself, not as Ray's wrapper."""
        try:
            trained = self.ray.get(trained_ref)
            if task.model_path is not None:
                trained = replace(trained, model=self.ray.get(model_ref))
            return task.runner("cpu").record(trained, self.ray.get(shard_refs))
        except self.ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, Exception) else exc) from None
