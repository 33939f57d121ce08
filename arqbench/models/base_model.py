"""The float base model of a (benchmark, sigma): a given checkpoint, a conventional one, or arqbench's trained cache."""

import hashlib
from dataclasses import asdict
from pathlib import Path

import torch
from filelock import FileLock
from torch import nn

from arqbench.console import warn
from arqbench.errors import ArqbenchError, SkipBenchmark
from arqbench.files import home, key_hash
from arqbench.models import checkpoints
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
        train(model, splits.train, benchmark.recipe, sigma, device, seed, epochs=epochs,
              state_path=path.with_suffix(".state"), description=f"train {benchmark.name} sigma={sigma:g}",
              workers=workers, amp=amp)
        checkpoints.save(model, path, benchmark=benchmark.name, sigma=sigma, recipe=asdict(benchmark.recipe))
        path.with_suffix(".state").unlink(missing_ok=True)
    return path


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
               normalization: str | None = None) -> tuple[nn.Module, dict]:
    """The base model in eval mode on ``device`` and where it came from. ``normalization`` (a name of the
    benchmark's or ``MEAN,.../STD,...``) overrides what a given or conventional checkpoint implies."""
    model = benchmark.build_model()
    conventional = benchmark.checkpoint_paths(sigma, data_root)
    found = next((path for path in conventional if path.is_file()), None)
    cached = trained_path(benchmark, sigma)
    if checkpoint is not None or found is not None:
        source = load_checkpoint(benchmark, model, checkpoint or found, normalization)
    else:
        if normalization is not None:
            warn(f"--normalization {normalization} ignored: it applies to a given or conventional checkpoint, "
                 f"and {benchmark.name}'s base model is arqbench's own, which records its normalisation")
        source = _load_cached(model, cached, benchmark) if cached.is_file() else None
        if source is None and benchmark.train_on_first_use:
            path = train_base_model(benchmark, sigma, splits, device, reuse=True)
            source = load_checkpoint(benchmark, model, path)
        elif source is None:
            looked = " or ".join(map(str, [*conventional, cached]))
            raise SkipBenchmark(
                f"{benchmark.name}: no base model for sigma={sigma:g} (looked at {looked}); pass --checkpoint FILE "
                f"or run `arqbench train --benchmark {benchmark.name} --sigma {sigma:g}`"
            )
    return model.to(device).eval(), {**source, "path": portable(source["path"])}


def portable(path: str) -> str:
    """A cache path written as ``$ARQBENCH_HOME/...``, so result files name no local directory."""
    try:
        return f"$ARQBENCH_HOME/{Path(path).resolve().relative_to(home().resolve())}"
    except ValueError:
        return path
