"""The float base model of a (benchmark, sigma): a given checkpoint, a conventional one, or arqbench's trained cache."""

import contextlib
import hashlib
from dataclasses import asdict
from pathlib import Path

import torch
from filelock import FileLock
from torch import nn

from arqbench import runtime
from arqbench.console import info, warn
from arqbench.errors import ArqbenchError, SkipBenchmark
from arqbench.files import home, key_hash
from arqbench.models import checkpoints, published
from arqbench.models.benchmark import Benchmark, Splits
from arqbench.models.normalize import choose
from arqbench.models.training import train


def trained_path(benchmark: Benchmark, sigma: float, seed: int = 0, epochs: int | None = None,
                 init: Path | None = None) -> Path:
    """Where ``arqbench train`` (or first use) stores the base model; the key changes when the recipe does
    (a shortened ``--epochs`` run, or one fine-tuned from the checkpoint ``init``, is stored apart: runs
    find only the full recipe's model trained from scratch)."""
    recipe = asdict(benchmark.recipe) if epochs is None else {**asdict(benchmark.recipe), "epochs": epochs}
    key = {"benchmark": benchmark.name, "architecture": benchmark.architecture, "sigma": sigma,
           "recipe": recipe, "seed": seed}
    if init is not None:
        with open(init, "rb") as handle:
            key["init"] = hashlib.file_digest(handle, "sha256").hexdigest()
    return home() / "models" / benchmark.name / f"sigma{sigma:g}-{key_hash(key)}.pt"


def train_base_model(benchmark: Benchmark, sigma: float, splits: Splits, device: torch.device, seed: int = 0,
                     epochs: int | None = None, workers: int = 0, amp: bool = False, reuse: bool = False,
                     init: Path | None = None, normalization: str | None = None) -> Path:
    """Noise-augmented training with the benchmark's recipe, resumable, saved to ``trained_path``; from the
    weights of the checkpoint ``init`` (fine-tuning, with its input ``normalization`` as ``load_checkpoint``
    determines it) when given, else from scratch.

    Training holds a lock beside the file (the OS drops it if the process dies), so processes
    sharing the cache train a model once: with ``reuse`` a process that waited for the lock
    returns the model the other one trained.

    Training is as deterministic as torch allows (``deterministic``): on one machine the same seed gives the
    same weights, whatever ``--threads`` says. Another CPU may round differently (README, "Reproducing").
    """
    if splits.train is None:
        raise SkipBenchmark(f"{benchmark.name}: no training data found; training needs the train split")
    torch.manual_seed(seed)
    model = benchmark.build_model()
    if init is not None:
        load_checkpoint(benchmark, model, init, normalization)
    path = trained_path(benchmark, sigma, seed, None if epochs == benchmark.recipe.epochs else epochs, init)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_suffix(".lock")):
        if reuse and path.is_file() and _load_cached(benchmark.build_model(), path, benchmark) is not None:
            return path
        with deterministic(device, benchmark):
            train(model, splits.train, benchmark.recipe, sigma, device, seed, epochs=epochs,
                  state_path=path.with_suffix(".state"), description=f"train {benchmark.name} sigma={sigma:g}",
                  workers=workers, amp=amp)
            trained = {"seed": seed, "epochs": epochs or benchmark.recipe.epochs, "from": "scratch" if init is None
                       else "checkpoint", "deterministic": True, **runtime.machine(device)}
        checkpoints.save(model, path, benchmark=benchmark.name, sigma=sigma, recipe=asdict(benchmark.recipe),
                         architecture=benchmark.architecture, trained=trained)
        path.with_suffix(".state").unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def deterministic(device: torch.device, benchmark: Benchmark):
    """Base-model training as reproducible as torch allows: deterministic algorithms (a warning, not an error,
    where an operator has none), cuDNN's autotuner off, and on the CPU the benchmark's own thread count
    (``Benchmark.threads``, else one), since a float sum's rounding depends on how it is split among threads."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        with runtime.threads((benchmark.threads or 1) if device.type == "cpu" else None):
            yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = before[2]


def _load_cached(model: nn.Module, path: Path, benchmark: Benchmark) -> dict | None:
    """Load arqbench's cached base model. A corrupt or stale one is reported; when the benchmark trains on
    first use it is deleted and None returned (so it is retrained), else it is an error saying how to re-train."""
    try:
        return load_checkpoint(benchmark, model, path)
    except ArqbenchError as exc:
        if not benchmark.train_on_first_use:
            raise ArqbenchError(f"cached base model unusable: {exc}; delete it and run "
                                f"`arqbench train --benchmark {benchmark.name}`") from None
        warn(f"cached base model {path} is unusable ({exc}); deleting it and retraining")
        path.unlink(missing_ok=True)
        return None


def load_checkpoint(benchmark: Benchmark, model: nn.Module, path: Path, normalization: str | None = None) -> dict:
    """Load ``path`` into ``model`` (``Normalized``) with the input normalisation its network was trained with
    (``arqbench.models.normalize.choose``; ``normalization``: ``--normalization``); returns where it came from."""
    source = checkpoints.load_into(model, path, benchmark.architecture)
    chosen, how = choose(normalization, source.pop("normalization"), source["layout"], benchmark.normalizations,
                         benchmark.layout_normalizations, f"checkpoint {path}")
    if chosen is not None:
        model.normalize_with(chosen)
    return {**source, "normalization": {**model.normalization._asdict(), "from": how}}


def base_model(benchmark: Benchmark, sigma: float, splits: Splits, device: torch.device,
               checkpoint: Path | None = None, data_root: Path | None = None,
               normalization: str | None = None, seed: int = 0,
               base_models: Path | None = None) -> tuple[nn.Module, dict]:
    """The base model in eval mode on ``device`` and where it came from: a given or conventional checkpoint;
    else arqbench's training of (benchmark, sigma, ``seed``), taken from the published folder ``base_models``
    (``arqbench.models.published``) where it is there, else from the cache, else trained. ``normalization`` (a
    name of the benchmark's or ``MEAN,.../STD,...``) overrides what a given or conventional checkpoint implies."""
    model = benchmark.build_model()
    conventional = benchmark.checkpoint_paths(sigma, data_root)
    found = next((path for path in conventional if path.is_file()), None)
    cached = trained_path(benchmark, sigma, seed)
    if checkpoint is not None or found is not None:
        if seed != 0:
            raise ArqbenchError(f"base-model seed {seed} asks for a network trained with that seed, but "
                                f"{checkpoint or found} is one given network; use --base-seeds shared with a checkpoint")
        source = {**load_checkpoint(benchmark, model, checkpoint or found, normalization), "seed": None}
    else:
        if normalization is not None:
            warn(f"--normalization {normalization} ignored: it applies to a given or conventional checkpoint, "
                 f"and {benchmark.name}'s base model is arqbench's own, which records its normalisation")
        entry = base_models and published.for_training(base_models, benchmark.name, benchmark.architecture, sigma,
                                                        seed, asdict(benchmark.recipe))
        if entry:
            source = load_checkpoint(benchmark, model, entry["path"])
            if fingerprint(model) != entry["fingerprint"]:
                raise ArqbenchError(f"published base model {entry['path']} does not hold the weights its manifest "
                                    f"names ({entry['fingerprint']}); fetch it again")
            info(f"{benchmark.name} sigma={sigma:g} seed {seed}: published base model {entry['path']}")
            return model.to(device).eval(), {**source, "seed": seed, "published": True}
        if base_models is not None:
            warn(f"{base_models} publishes no {benchmark.name} base model for sigma={sigma:g} seed {seed} with this "
                 f"recipe; using arqbench's own training")
        source = _load_cached(model, cached, benchmark) if cached.is_file() else None
        if source is None and benchmark.train_on_first_use:
            path = train_base_model(benchmark, sigma, splits, device, seed=seed, reuse=True)
            source = load_checkpoint(benchmark, model, path)
        elif source is None:
            looked = " or ".join(map(str, [*conventional, cached]))
            raise SkipBenchmark(
                f"{benchmark.name}: no base model for sigma={sigma:g} (looked at {looked}); pass --checkpoint FILE "
                f"or run `arqbench train --benchmark {benchmark.name} --sigma {sigma:g}"
                f"{f' --seed {seed}' if seed else ''}`"
            )
        source["seed"] = seed
    return model.to(device).eval(), {**source, "path": portable(source["path"])}


def fingerprint(model: nn.Module) -> str:
    """A hash of the weights: caches keyed by it are rebuilt whenever the base model changes, and a published
    base model is found by it."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def portable(path: str) -> str:
    """A cache path written as ``$ARQBENCH_HOME/...``, so result files name no local directory."""
    try:
        return f"$ARQBENCH_HOME/{Path(path).resolve().relative_to(home().resolve())}"
    except ValueError:
        return path
