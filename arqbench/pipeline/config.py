"""The protocol settings of a run: global defaults < benchmark defaults < preset < command-line flags; the
quantizer, cost model and certifier no one names are the plugins registered as their kind's default.

``Protocol`` holds only what every cell shares (certification, quantizer, cost model, fine-tune). What a
single plugin needs is that plugin's own option, ``options = {plugin name: {key: value}}``, checked against
the plugin's signature (``arqbench.plugins.resolve_options``); the key ``"*"`` holds options shared by
every plugin that takes them (what the alias flags ``--np`` and ``--episodes`` set).
"""

import math
from dataclasses import asdict, dataclass, field, fields

from arqbench import plugins
from arqbench.errors import ArqbenchError
from arqbench.models.benchmark import Benchmark
from arqbench.models.data import SUBSETS
from arqbench.models.finetune_recipe import DEFAULT as DEFAULT_FINETUNE_RECIPE, FinetuneRecipe, fields_from_text
from arqbench.pipeline.values import BASE_SEEDS
from arqbench.runtime import PRECISIONS

SHARED = "*"
DEFAULTS = {
    "n0": 100, "n": 100_000, "alpha": 0.001, "test_images": 500, "batch_size": 1000, "subset": "random",
    "precision": "fp32", "search_activations": False, "keep_ends": True, "finetune_recipe": DEFAULT_FINETUNE_RECIPE,
    "base_seeds": "shared",
}

PLUGIN_SETTINGS = ("quantizer", "cost_model", "certifier")  # default: the plugin registered as its kind's default
PRESETS = {
    # Cohen et al.'s certification, as the ARQ paper reports it. Plugin options keep their defaults.
    "paper": {"n0": 100, "n": 100_000, "alpha": 0.001, "test_images": 500},
}


@dataclass(frozen=True)
class Protocol:
    n0: int
    n: int
    alpha: float
    test_images: int
    subset: str  # which test images are certified (arqbench.models.data.SUBSETS): random, cohen, cohen-imagenet
    batch_size: int  # noisy samples per forward during certification
    precision: str  # of the certified classifier's forward passes (arqbench.runtime.PRECISIONS)
    finetune_epochs: int
    finetune_recipe: dict  # FinetuneRecipe's fields (arqbench.models.finetune_recipe): the fine-tune's remedies
    quantizer: str
    cost_model: str
    certifier: str
    search_activations: bool
    keep_ends: bool  # first and last layer held at 8 bits
    base_seeds: str  # BASE_SEEDS: whether seed s quantizes base model 0 or base model s
    options: dict = field(default_factory=dict)  # {plugin name or "*": {key: value}}

    def as_dict(self) -> dict:
        return asdict(self)

    def base_seed(self, seed: int) -> int:
        """The training seed of the base model a cell of ``seed`` quantizes (``base_seeds``)."""
        return seed if self.base_seeds == "per-seed" else 0

    def tuning(self) -> FinetuneRecipe:
        """The fine-tune's remedies (``finetune_recipe``) as a ``FinetuneRecipe``."""
        return FinetuneRecipe.parse(self.finetune_recipe)

    def plugin_options(self, kind: str, name: str) -> dict:
        """The options this run gives plugin ``name`` of ``kind`` (its own over the shared ones)."""
        return plugins.resolve_options(kind, name, self.options.get(name), self.options.get(SHARED))

    def create(self, kind: str, name: str, **overrides):
        """The plugin object, built with this run's options for it, ``overrides`` winning."""
        return plugins.create(kind, name, **{**self.plugin_options(kind, name), **overrides})


def create_benchmark(name: str, options: dict | None = None):
    """The benchmark plugin ``name`` built with its options from ``options`` (``{plugin or "*": {...}}``)."""
    options = options or {}
    return plugins.create("benchmark", name, **plugins.resolve_options("benchmark", name, options.get(name),
                                                                        options.get(SHARED)))


def known_settings(settings: dict) -> dict:
    """A result file's protocol settings that this version knows (older files carry settings that have since
    become plugin options and only steered the search, which a replay does not run)."""
    known = {f.name for f in fields(Protocol)}
    return {k: v for k, v in settings.items() if k in known}


def merge_options(*layers: dict | None) -> dict:
    """Per-plugin option dicts merged key by key, later layers winning."""
    out: dict = {}
    for layer in layers:
        for name, values in (layer or {}).items():
            out[name] = {**out.get(name, {}), **values}
    return out


def installed(options: dict | None) -> dict:
    """A benchmark's default options for the plugins that are registered: a default for a search that is not
    installed (or left out with ``ARQBENCH_PLUGINS``) is nobody's, unlike a user's ``--option``, which is checked."""
    return {name: values for name, values in (options or {}).items() if name == SHARED or plugins.kinds_of(name)}


def resolve(benchmark: Benchmark, overrides: dict, preset: str | None = None) -> Protocol:
    values = dict(DEFAULTS, finetune_epochs=benchmark.finetune.epochs)
    values.update({k: v for k, v in benchmark.defaults.items() if k != "options"})
    if preset:
        if preset not in PRESETS:
            raise ArqbenchError(f"unknown preset '{preset}'; available: {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    recipe = {**DEFAULT_FINETUNE_RECIPE, **values["finetune_recipe"]}
    given = overrides.get("finetune_recipe")
    values.update({k: v for k, v in overrides.items() if v is not None and k not in ("options", "finetune_recipe")})
    # the fields given (a dict, or --finetune-recipe's KEY=VALUE text) change the benchmark's recipe, the rest stay
    recipe.update(fields_from_text(given) if isinstance(given, str) else given or {})
    values["finetune_recipe"] = FinetuneRecipe.parse(recipe).as_dict()
    values["options"] = merge_options(installed(benchmark.defaults.get("options")), overrides.get("options"))
    for kind in PLUGIN_SETTINGS:
        if values.get(kind) is None:
            values[kind] = plugins.default(kind)
    names = {f.name for f in fields(Protocol)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ArqbenchError(f"unknown protocol setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    protocol = Protocol(**values)
    check(protocol)
    return protocol


def check(p: Protocol) -> None:
    for name in ("n0", "n", "test_images", "batch_size"):
        if getattr(p, name) < 1:
            raise ArqbenchError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(p, name)}")
    if not (0 < p.alpha < 0.5) or math.isnan(p.alpha):
        raise ArqbenchError(f"--alpha must be in (0, 0.5), got {p.alpha}")
    if p.precision not in PRECISIONS:
        raise ArqbenchError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{p.precision}'")
    if p.subset not in SUBSETS:
        raise ArqbenchError(f"--subset must be one of {', '.join(SUBSETS)}, got '{p.subset}'")
    if p.base_seeds not in BASE_SEEDS:
        raise ArqbenchError(f"--base-seeds must be one of {', '.join(BASE_SEEDS)}, got '{p.base_seeds}'")
    if p.finetune_epochs < 0:
        raise ArqbenchError(f"--finetune-epochs must be >= 0, got {p.finetune_epochs}")
