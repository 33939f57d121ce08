"""A sweep from its settings: the one path ``arqbench run`` (the command line) and ``arqbench.run`` (the library)
both take.

``run_settings(config, given, where)`` checks the settings a caller gives (by flag name, ``_`` or ``-``:
``test_images=8``, ``quantize_ends=True``, ``save_models=False``, ``options={"haq": {"warmup": 5}}``) and those of a
TOML sweep file (``arqbench.pipeline.sweepfile``), the caller's winning (``options`` per plugin and key), and
returns them as a typed ``RunSettings``, each mistake one line as the command line words it. ``run(settings)``
plans the sweep and runs it (or, with ``dry_run``, estimates and prints it), returning the ``Ran``: its spec and
outcome. Values go through the same text parsers as the command line's flags (``arqbench.pipeline.values``), a
list as its comma list, so a value means the same whether typed, written in a file or passed from Python.

A result records ``record(settings)`` as its ``run_config``: a sweep file giving the same settings (a switch that
turns something off recorded by what it turns off: ``keep-ends = false`` for ``--quantize-ends``,
``save-models = false`` for ``--no-save-models``; ``config``, the file read, beside them).
"""

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from arqbench.errors import ArqbenchError
from arqbench.pipeline import sweepfile
from arqbench.pipeline.values import BASE_SEEDS, choice, floats, integer, ints, names, number, option, positive_int

DEFAULT_OUT = Path("arqbench-results")
SHARED = "*"  # options set for every plugin that takes the key (arqbench.pipeline.config.SHARED)
# Convenience flags that set one option of every plugin taking it: flag -> (option, type, help)
ALIASES = {
    "--episodes": ("episodes", int, "search episodes of every search that has them (HAQ, ARQ; paper: 600), "
                                    "= --option NAME.episodes=N for each"),
    "--np": ("n_p", float, "incremental certification samples as a fraction of n (irs, and ARQ's search "
                           "through it; default 0.1), = --option irs.n_p=F"),
}


@dataclass
class RunSettings:
    """Everything ``arqbench run`` takes, typed, with its defaults (``None``: the benchmark's, or the default
    plugin's). Fields are in the order of the command's flags, which ``record`` keeps."""

    methods: list[str] | None = None  # None: every registered search
    benchmarks: list[str] | None = None  # None: the default benchmark
    sigma: list[float] = field(default_factory=lambda: [0.25])
    budget: list[float] = field(default_factory=lambda: [0.025])
    seed: list[int] = field(default_factory=lambda: [0])
    out: Path = DEFAULT_OUT
    force: bool = False
    executor: str = "local"
    address: str | None = None
    cpus_per_task: float = 1
    gpus_per_task: float = 0
    certify_shards: int = 1
    n0: int | None = None
    n: int | None = None
    alpha: float | None = None
    test_images: int | None = None
    subset: str | None = None
    precision: str | None = None
    batch_size: int | None = None
    finetune_epochs: int | None = None
    finetune_recipe: str | None = None  # KEY=VALUE,... over the benchmark's recipe (arqbench.models.finetune_recipe)
    certifier: str | None = None
    quantizer: str | None = None
    cost_model: str | None = None
    episodes: int | None = None
    np: float | None = None
    search_activations: bool | None = None
    keep_ends: bool | None = None
    base_seeds: str | None = None  # arqbench.pipeline.config.BASE_SEEDS
    base_models: Path | None = None  # a folder of published base models (arqbench.models.published)
    preset: str | None = None
    options: dict = field(default_factory=dict)  # {plugin name: {key: value}}
    device: str = "cpu"
    data_root: Path | None = field(default_factory=lambda: _path(os.environ.get("ARQBENCH_DATA")))
    checkpoint: Path | None = None
    normalization: str | None = None
    workers: int = 0
    threads: int | None = None
    config: Path | None = None  # the sweep file the settings were read from (and ``given`` overrode)
    dry_run: bool = False
    save_models: bool = True


def recipe_text(text: str) -> str:
    """--finetune-recipe's text, checked (``fields_from_text``) and kept as given: a sweep file records it so."""
    from arqbench.models.finetune_recipe import fields_from_text

    fields_from_text(text)
    return text


def _path(text: str | None) -> Path | None:
    return None if text is None else Path(text)


@dataclass(frozen=True)
class Flag:
    """A run flag: its name without dashes (a sweep file's key), the ``RunSettings`` field it sets, and how its
    text becomes the value (``None``: a switch; ``off``: a switch setting its field to False)."""

    name: str
    field: str
    parse: Callable[[str], object] | None = None
    off: bool = False


FLAGS = [Flag("methods", "methods", names("--methods")), Flag("benchmarks", "benchmarks", names("--benchmarks")),
         Flag("sigma", "sigma", floats("--sigma")), Flag("budget", "budget", floats("--budget")),
         Flag("seed", "seed", ints("--seed")), Flag("out", "out", Path), Flag("force", "force"),
         Flag("executor", "executor", choice("--executor", ("local", "ray"))), Flag("address", "address", str),
         Flag("cpus-per-task", "cpus_per_task", number("--cpus-per-task")),
         Flag("gpus-per-task", "gpus_per_task", number("--gpus-per-task")),
         Flag("certify-shards", "certify_shards", integer("--certify-shards")),
         Flag("n0", "n0", integer("--n0")), Flag("n", "n", integer("--n")), Flag("alpha", "alpha", number("--alpha")),
         Flag("test-images", "test_images", integer("--test-images")), Flag("subset", "subset", str),
         Flag("precision", "precision", choice("--precision", ("fp32", "tf32", "bf16"))),
         Flag("batch-size", "batch_size", integer("--batch-size")),
         Flag("finetune-epochs", "finetune_epochs", integer("--finetune-epochs")),
         Flag("finetune-recipe", "finetune_recipe", recipe_text),
         Flag("certifier", "certifier", str), Flag("quantizer", "quantizer", str), Flag("cost-model", "cost_model", str),
         Flag("episodes", "episodes", integer("--episodes")), Flag("np", "np", number("--np")),
         Flag("search-activations", "search_activations"), Flag("quantize-ends", "keep_ends", off=True),
         Flag("base-seeds", "base_seeds", choice("--base-seeds", BASE_SEEDS)),
         Flag("base-models", "base_models", Path),
         Flag("preset", "preset", choice("--preset", ("paper",))), Flag("option", "options", option),
         Flag("device", "device", str), Flag("data-root", "data_root", Path), Flag("checkpoint", "checkpoint", Path),
         Flag("normalization", "normalization", str), Flag("workers", "workers", integer("--workers")),
         Flag("threads", "threads", positive_int("--threads")), Flag("dry-run", "dry_run"),
         Flag("no-save-models", "save_models", off=True)]
BY_NAME = {flag.name: flag for flag in FLAGS}
SWITCHED_OFF = {flag.field.replace("_", "-"): flag for flag in FLAGS if flag.off}  # keep-ends, save-models
NOT_RECORDED = {"dry-run"}


@dataclass
class Ran:
    """What ``run`` did: the sweep's spec, and its ``Outcome`` (cells run, reused, failed), or for a dry run
    the ``dryrun.Estimate`` of each cell (already printed)."""

    spec: object  # arqbench.pipeline.sweep.SweepSpec
    outcome: object | None = None
    estimates: list | None = None


def run_settings(config: str | Path | None, given: dict, where: str) -> RunSettings:
    """``given`` (by flag name) over the ``config`` sweep file's, checked and typed; ``where`` names the caller
    in a mistake of its own (a mistake in the file is prefixed ``--config FILE:``)."""
    mine = _typed(_entries(given, where))
    values = {}
    if config is not None:
        place = f"--config {config}"
        entries = _entries(sweepfile.read(Path(config)), place)
        try:
            values = _typed(entries)
        except ArqbenchError as exc:
            raise ArqbenchError(f"{place}: {exc}") from None
    options = {name: {**values.get("options", {}).get(name, {}), **table}
               for name, table in mine.get("options", {}).items()}
    values = {**values, **mine, "options": {**values.get("options", {}), **options}}
    settings = RunSettings(**values, config=None if config is None else Path(config))
    if settings.benchmarks is None:
        from arqbench import plugins

        settings.benchmarks = [plugins.default("benchmark")]
    return settings


def _entries(given: dict, where: str) -> list[tuple[Flag, object]]:
    """(flag, value) for each setting given: a switch's value True or False, another's its text; a wrong name or
    kind of value is one line naming ``where``. A switch given False, or a value None, is not given."""
    entries = []
    for key, value in given.items():
        name = str(key).replace("_", "-")
        if name in ("option", "options"):
            entries += [(BY_NAME["option"], text) for text in _options(value, where)]
            continue
        if name == sweepfile.SOURCE:
            continue
        flag = BY_NAME.get(name) or SWITCHED_OFF.get(name)
        if flag is None:
            known = ", ".join(sorted({*BY_NAME, *SWITCHED_OFF, "options"} - {"option"}))
            raise ArqbenchError(f"{where}: unknown setting '{key}'; known: {known}")
        if flag.parse is None:  # a switch; by the name of what it turns off, true is its default
            if not isinstance(value, bool):
                raise ArqbenchError(f"{where}: '{key}' is a switch; give true or false, got {value!r}")
            if value if name == flag.name else not value:  # by what it turns off, false gives the switch
                entries.append((flag, True))
        elif isinstance(value, (dict, bool)):
            raise ArqbenchError(f"{where}: '{key}' takes a value or a list of values, got {value!r}")
        elif value is not None:
            entries.append((flag, ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)))
    return entries


def _options(value, where: str) -> list[str]:
    """``{NAME: {KEY: VALUE}}`` (a TOML table per plugin) or a list of ``"NAME.KEY=VALUE"`` -> those texts."""
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ArqbenchError(f"{where}: options are [options.NAME] tables of KEY = VALUE (or a list of "
                            f"'NAME.KEY=VALUE'), got {value!r}")
    return [f"{name}.{key}={item!r}" for name, table in value.items() for key, item in table.items()]


def _typed(entries: list[tuple[Flag, object]]) -> dict:
    """The ``RunSettings`` fields the entries set, each text parsed as its flag's (the last of a repeated one
    wins; ``options`` gather, the last per plugin and key)."""
    values: dict = {}
    for flag, value in entries:
        if flag.parse is None:
            values[flag.field] = not flag.off
        elif flag.name == "option":
            plugin, key, item = option(value)
            values.setdefault("options", {}).setdefault(plugin, {})[key] = item
        else:
            values[flag.field] = flag.parse(value)
    return values


def command_line(config: str | Path | None, given: dict, where: str) -> str:
    """The ``arqbench run`` command giving these settings, recorded in each result of a library call."""
    argv = ["run", *([f"--config={config}"] if config is not None else [])]
    for flag, value in _entries(given, where):
        argv.append(f"--{flag.name}" if flag.parse is None else f"--{flag.name}={value}")
    return shlex.join(["arqbench", *argv])


def record(settings: RunSettings) -> dict:
    """The settings as a sweep file (``run_config``): plain values keyed by flag name, a switch that turns
    something off by what it turns off, ``options`` as tables, ``config`` (the file read) last."""
    out = {}
    for flag in FLAGS:
        if flag.name in NOT_RECORDED:
            continue
        name = flag.field.replace("_", "-") if flag.off else "options" if flag.name == "option" else flag.name
        value = getattr(settings, flag.field)
        out[name] = str(value) if isinstance(value, Path) else value
    if settings.config is not None:
        out[sweepfile.SOURCE] = str(settings.config)
    return out


PROTOCOL_KEYS = ("n0", "n", "alpha", "test_images", "subset", "precision", "batch_size", "finetune_epochs",
                 "finetune_recipe",
                 "certifier", "quantizer", "cost_model", "search_activations", "keep_ends", "base_seeds")


def protocol_overrides(value: Callable[[str], Any], aliases: dict[str, Any], options: dict[str, dict]) -> dict:
    """The protocol settings given (``arqbench.pipeline.config.resolve``'s flags): ``value(key)`` for each of
    ``PROTOCOL_KEYS``, and the plugin options: the aliases given (``{option key: value or None}``) as shared
    options first, then each plugin's table. Shared by ``run`` and the commands that certify or profile."""
    values = {key: value(key) for key in PROTOCOL_KEYS}
    merged: dict = {}
    for key, given in aliases.items():
        if given is not None:
            merged.setdefault(SHARED, {})[key] = given
    for name, table in options.items():
        merged.setdefault(name, {}).update(table)
    values["options"] = merged or None
    return values


def overrides(settings: RunSettings) -> dict:
    """``protocol_overrides`` of a run's settings."""
    return protocol_overrides(lambda key: getattr(settings, key),
                              {key: getattr(settings, flag[2:]) for flag, (key, _, _) in ALIASES.items()},
                              settings.options)


def sweep_spec(settings: RunSettings, command: str):
    """The ``SweepSpec`` of the settings; ``command`` is recorded in every result."""
    from arqbench import plugins
    from arqbench.pipeline.sweep import SweepSpec

    if settings.workers < 0:
        raise ArqbenchError(f"--workers must be >= 0, got {settings.workers}")
    return SweepSpec(benchmarks=settings.benchmarks, methods=settings.methods or plugins.names("search"),
                     sigmas=settings.sigma, budgets=settings.budget, seeds=settings.seed, out=settings.out,
                     overrides=overrides(settings), preset=settings.preset, device=settings.device,
                     data_root=settings.data_root, checkpoint=settings.checkpoint, base_models=settings.base_models,
                     normalization=settings.normalization, force=settings.force, executor=settings.executor,
                     address=settings.address, cpus_per_task=settings.cpus_per_task,
                     gpus_per_task=settings.gpus_per_task, certify_shards=settings.certify_shards,
                     workers=settings.workers, threads=settings.threads, command=command,
                     save_models=settings.save_models, settings=record(settings))


def run(settings: RunSettings, command: str) -> Ran:
    """Run the sweep (cells already finished in ``settings.out`` reused), or with ``dry_run`` estimate and
    print it, running nothing."""
    from arqbench.pipeline import dryrun
    from arqbench.pipeline.sweep import run_sweep

    spec = sweep_spec(settings, command)
    if settings.dry_run:
        estimates, notes = dryrun.estimate(spec)
        dryrun.report(spec, estimates, notes)
        return Ran(spec, estimates=estimates)
    return Ran(spec, outcome=run_sweep(spec))

