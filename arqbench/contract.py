"""The plugin contract: the types plugins and the core exchange, and what each kind of plugin must do.

This module is the bottom of the house: it imports only torch and the standard library, never the rest of
arqbench, so it cannot move when the core does. A plugin imports from here, ``arqbench.toolkit`` (shared
helpers), ``arqbench.hookspecs`` (``hookimpl``) and ``arqbench.errors``, and nothing else of arqbench.
A change here bumps ``arqbench.PLUGIN_API`` and is logged in CHANGELOG.md.

A plugin registers ``register(name, factory)`` from a hook of ``arqbench.hookspecs``; ``factory(**options)``
builds the object. The factory's keyword parameters are the plugin's options: ``--option NAME.KEY=VALUE``
sets them, ``arqbench list --options NAME`` lists them, every result records them, and a key the factory
does not take is refused before any work. The object then follows its kind's Protocol below (each is
``runtime_checkable``; the tests also check the signatures of every first-party plugin).

The page reads in the order a plugin author needs it: the five kinds (what a plugin must do), what a plugin is
handed (``SearchContext``, ``RunProtocol``, ``CostLedger``), then the values they exchange.
"""

from __future__ import annotations

import math
from dataclasses import InitVar, asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Hashable, Iterable, Protocol, Sequence, TypedDict, runtime_checkable

import torch
from torch import nn
from torch.utils.data import Dataset

__all__ = [
    # the five kinds, and their optional additions
    "Quantizer", "WeightQuantizer", "QuantizedLayer", "Certifier", "IncrementalCertifier", "Search",
    "EstimatingSearch", "TimedSearch", "CostModel", "Benchmark",
    # what a plugin is handed
    "SearchContext", "RunProtocol", "CostLedger",
    # values
    "ABSTAIN", "MIN_BITS", "MAX_BITS", "Policy", "LayerInfo", "SmoothingConfig", "Certificate", "CertificateDetails",
    "Reference", "QuantParams", "SearchResult", "SearchInfo", "TrainRecipe", "Splits", "DataSizes", "Workload", "Cost",
]

ABSTAIN = -1  # a certificate's prediction when the smoothed classifier abstains
MIN_BITS, MAX_BITS = 2, 8  # the bit-widths a policy may give a layer
Policy = dict[str, tuple[int, int]]  # {layer name: (weight bits, activation bits)}


# ---- the five kinds: what each plugin must do ---------------------------------------------------------------

@runtime_checkable
class Quantizer(Protocol):
    """Turns (model, bit policy) into a fake-quantized model that still trains."""

    def quantize(self, model: nn.Module, policy: Policy, calibration: Sequence[torch.Tensor]) -> nn.Module:
        """A quantized **copy** of ``model`` (the float model is never modified; the core compares it before and
        after, and refuses a quantizer that changed it or returned anything but an ``nn.Module``): every Conv2d/Linear layer
        named in ``policy`` computes with its weights at ``w_bits`` and its input activation at ``a_bits``
        (at most 2^bits levels each). ``calibration`` is a list of noisy input batches, the same for every
        method of a run, to fix or initialise activation ranges. The copy must still train: gradients reach
        its parameters (straight-through rounding), so the protocol's fine-tune can run on it; in eval mode
        it must compute the same function on every call (the certificate is of that function).

        Saved models are rebuilt without data: ``quantize(fresh model, policy, [])`` (an empty
        ``calibration``) followed by ``load_state_dict`` of the saved copy must give a model that computes
        exactly the saved one's function, bit for bit. So whatever calibration or training sets must live in
        the state_dict (parameters, buffers), and anything derived from it and kept elsewhere (a Python number
        cached for speed) must be recomputed on loading, e.g. by a ``register_load_state_dict_post_hook``."""


@runtime_checkable
class WeightQuantizer(Quantizer, Protocol):
    """Optional addition to a Quantizer, needed by sensitivity-based searches (``hawq``)."""

    def quantize_weight(self, weight: torch.Tensor, bits: int) -> torch.Tensor:
        """``Q_b(W)``: the weight tensor as ``quantize`` would compute it at ``bits`` bits, so a search can
        measure the perturbation ``||Q_b(W) - W||^2`` without building a model."""


@runtime_checkable
class QuantizedLayer(Protocol):
    """Optional: a module a quantizer puts in place of a Conv2d/Linear, describing itself as integers, so the
    quantized model can be exported (``arqbench export --format onnx``: QuantizeLinear/DequantizeLinear at
    the policy's bit-widths). A quantized model without such layers cannot be exported."""

    layer: nn.Module  # the wrapped Conv2d/Linear (its bias, stride, padding, groups are used as they are)

    def quant_params(self) -> QuantParams:
        """The weights as integers with one scale per output channel and the input activation's grid,
        computing the same function as the module does."""


@runtime_checkable
class Certifier(Protocol):
    """Certifies a classifier smoothed with Gaussian noise, example by example."""

    def certify(self, model: nn.Module, examples: Iterable[tuple[int, torch.Tensor, int]], config: SmoothingConfig,
                num_classes: int, reference: Reference | None = None) -> list[Certificate]:
        """One Certificate per ``(index, input, label)`` of ``examples``, in order. ``model`` is the base
        classifier f (eval mode, on its device; inputs are unnormalised, noise is added to them).

        Guarantee: for every example, with probability at least 1 - alpha over the certifier's noise (the
        certifier states its own level if it is larger, as ``irs``'s alpha + alpha_zeta), either the
        certificate abstains (``prediction == ABSTAIN``, radius 0) or the smoothed classifier
        g(x') = argmax_c P(f(x' + e) = c), e ~ N(0, sigma^2 I), returns ``prediction`` for every x' with
        ||x' - x||_2 < ``radius``. Noise must be drawn from the protocol's seeded streams
        (``arqbench.toolkit.sample_predictions`` with ``toolkit.generators(device, config.seed, indices,
        phase)``) so a certificate does not depend on batching or sharding and can be replayed.
        ``reference`` (the unmodified float model and a cache key) is given to incremental certifiers; a
        certifier that needs it and gets None raises ArqbenchError."""


@runtime_checkable
class IncrementalCertifier(Certifier, Protocol):
    """Optional addition to a Certifier that reuses a cached certification of ``reference`` (``irs``)."""

    stats: dict  # counters searches record: "float_certified", "float_reused", ...

    def samples(self, config: SmoothingConfig) -> int:
        """Noisy samples a modified model costs per example (IRS's N_p), for cost estimates."""


@runtime_checkable
class Search(Protocol):
    """Finds a bit policy under the cost budget."""

    def search(self, ctx: SearchContext) -> SearchResult:
        """A policy for every layer in ``ctx.layers`` with bits in [MIN_BITS, MAX_BITS], layers in ``ctx.fixed``
        at (8, 8), activation bits 8 unless ``ctx.search_activations``, each group of ``ctx.tied`` at one
        precision, and ``ctx.cost_fraction(policy) <= ctx.budget`` (raise ``arqbench.errors.InfeasibleBudget``
        when no policy can meet it; ``ctx.within_budget`` ties and fits a policy). The core checks each rule
        before the policy is fine-tuned: a breach fails the cell with one line naming the plugin and the rule. It may use only what ``ctx`` offers: the search split, never the
        certification subset. ``SearchResult.info`` (``SearchInfo``) is saved with the result. Cached work the
        search reads instead of computing (its own caches, e.g. Hessian traces) goes to ``ctx.ledger``, and so
        does time blocked on another process's lock; certifying through ``ctx.reference()`` reports what the
        certifier reuses."""


@runtime_checkable
class EstimatingSearch(Search, Protocol):
    """Optional addition to a Search, for ``arqbench run --dry-run``."""

    def estimate(self, work: Workload) -> "float | Cost":
        """About how many noisy forward passes of one input the search costs on ``work`` (the layers,
        protocol, split sizes, but no model or data). A training step counts as ``work.train_cost``
        forwards per sample. Work cached and reused by other cells (a profile per base model and seed that
        every budget reuses) is returned as ``Cost.shared`` under its cache key, so a sweep counts it once. A
        search without this method is counted as costing nothing."""


@runtime_checkable
class TimedSearch(Search, Protocol):
    """Deprecated (plugin API 1.1; read until arqbench 0.5): ``arqbench.pipeline.timing`` derives the search time
    of result files written before cells recorded it in parts (own work, cached work reused, lock waits) from
    what the files record, so a search plugin need not. Was: an optional addition to a Search for such files."""

    @staticmethod
    def recorded_search_timing(info: dict, timing: dict) -> dict:
        """Any of ``search_s`` (own work), ``search_wait_s``, ``search_reused_s`` (each cached item counted
        once) derived from such a file's search ``info`` and its ``timing`` (``search_s``: the search's wall
        time; ``search_cost_s``); the docstring says how. A static method: it is read from the registered
        factory and must not depend on the plugin's options."""


@runtime_checkable
class CostModel(Protocol):
    """Maps (layers, policy) to a cost; budgets are fractions of the float model's cost."""

    def cost(self, layers: list[LayerInfo], policy: Policy) -> float:
        """A non-negative cost, non-decreasing in every layer's bits. The float model is the policy with
        every layer at (32, 32). Searches that solve an integer program over layers (``hawq``) need the
        cost to be a sum over layers; they check that and refuse a cost model that is not."""


@dataclass
class Benchmark:
    """A (model, dataset, sigma-specific base checkpoint) recipe. Subclass it and override ``build_model`` and
    ``splits`` (the other methods are optional); the factory you register returns an instance."""

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W) of one unnormalised input in [0, 1]
    radii: tuple[float, ...]  # the certified-accuracy radii reported
    recipe: TrainRecipe  # noise-augmented training of the base model
    finetune: TrainRecipe  # the protocol's quantization-aware fine-tune
    # protocol defaults for this benchmark (n, n0, test_images, ...) and plugin options under "options":
    # {plugin name, or "*" for every plugin taking the key: {key: value}}
    defaults: dict = field(default_factory=dict)
    train_on_first_use: bool = False  # small benchmarks train their base model when none is cached
    search_images: int = 500  # size of the held-out search split carved from the training data
    architecture: str = ""  # recorded with checkpoints; a checkpoint of another architecture is refused
    # Named input normalisations (``toolkit.Normalization``) a checkpoint's network may have been trained with
    # (``--normalization NAME``), and the one each checkpoint layout ("cohen", "state_dict") implies for this
    # benchmark. A checkpoint that records none and whose layout implies none is refused.
    normalizations: dict[str, Any] = field(default_factory=dict)
    layout_normalizations: dict[str, str] = field(default_factory=dict)
    data_sizes: DataSizes = field(default_factory=dict)  # optional: the full dataset's split sizes
    # optional: the CPU thread count this benchmark's work runs fastest at (torch.set_num_threads), chosen by
    # measurement (benchmarks/threads.py); None: torch's default. ``--threads`` overrides it.
    threads: int | None = None
    gamma: InitVar[float | None] = None  # 0.1's field, removed in 0.4: refused, saying what to write instead

    def __post_init__(self, gamma: float | None):
        _removed_settings(self, gamma)

    def build_model(self) -> nn.Module:
        """A freshly initialised model whose first layer normalises its input (``toolkit.Normalized``), so noise
        is added in input space; its Conv2d/Linear layers are what policies name."""
        raise NotImplementedError

    def splits(self, data_root: Path | None) -> Splits:
        """The data (inputs in [0, 1]); raise ``arqbench.errors.SkipBenchmark`` naming the path read when it
        is missing."""
        raise NotImplementedError

    def checkpoint_paths(self, sigma: float, data_root: Path | None) -> list[Path]:
        """Where a user's checkpoint for ``sigma`` is looked for by convention, first found first."""
        return []

    def tied_layers(self, model: nn.Module) -> list[list[str]]:
        """Groups of layer names that must share one precision (e.g. a shortcut and its block's first conv)."""
        return []


# ---- what a plugin is handed -------------------------------------------------------------------------------

@runtime_checkable
class SearchContext(Protocol):
    """What a search method gets: everything it may use comes through here, so every method runs under the same
    protocol and differs only by the policy it returns. Never the certification subset."""

    model: nn.Module  # the float base model, eval mode, on ``device``
    layers: list[LayerInfo]
    benchmark: "Benchmark"
    data: Any  # ``data.search``: the held-out search split; ``data.finetune``: the fine-tune split; ``data.workers``
    quantizer: "Quantizer"
    cost_model: "CostModel"
    budget: float
    sigma: float
    seed: int
    device: torch.device
    fixed: set[str]  # layers held at 8/8 bits
    tied: list[list[str]]  # groups of layers that must share one precision (``Benchmark.tied_layers``)
    search_activations: bool
    smoothing: SmoothingConfig  # the final certification's settings (searches may scale n down)
    protocol: RunProtocol
    reference_key: dict  # identifies the base model for caches
    wait_for_shared: bool  # False: raise arqbench.errors.Busy rather than wait for another process's work
    float_cost: float
    ledger: CostLedger  # report cached work reused and lock waits here: the cell's search cost reads it
    # ``with ctx.progress(description, total) as advance:`` shows a search's steps (episodes, points) with the
    # time left on a terminal, nothing elsewhere; call ``advance()`` after each step
    progress: Callable[[str, int], ContextManager[Callable[[], None]]]

    def cost_fraction(self, policy: Policy) -> float:
        """The policy's cost as a fraction of the float model's."""

    def within_budget(self, policy: Policy) -> Policy:
        """The action wall: each group of ``tied`` layers at one precision (its lowest bits), then bits lowered
        (last layer first, a tied group as one) until the policy meets the budget."""

    def calibration(self) -> list[torch.Tensor]:
        """The fixed noisy batches every candidate's activation ranges are calibrated on."""

    def quantize(self, policy: Policy) -> nn.Module:
        """The float model quantized by the run's quantizer (eval mode)."""

    def accuracy(self, model: nn.Module, indices: list[int] | None = None) -> float:
        """Clean top-1 accuracy on the search split (on its images ``indices`` where given)."""

    def finetune(self, model: nn.Module, steps: int | None) -> nn.Module:
        """The protocol's noise-augmented fine-tune cut to ``steps`` SGD steps (deterministic per policy); ``None``:
        the whole final fine-tune, so the model is the one the protocol ships for that policy."""

    def candidate(self, policy: Policy, finetune_steps: int | None) -> nn.Module:
        """The model a search scores for ``policy``: quantized, then fine-tuned ``finetune_steps`` steps (``None``:
        as the protocol fine-tunes the model it ships)."""

    def reference(self) -> Reference:
        """The float model as the reference of incremental certification on the search split."""


@runtime_checkable
class RunProtocol(Protocol):
    """The run's protocol settings as a plugin sees them (``ctx.protocol``, ``work.protocol``)."""

    n0: int
    n: int
    alpha: float
    quantizer: str
    cost_model: str
    certifier: str
    search_activations: bool
    keep_ends: bool  # first and last layer held at 8 bits
    finetune_epochs: int  # the final fine-tune's epochs (0: none)

    def plugin_options(self, kind: str, name: str) -> dict:
        """The options this run gives plugin ``name`` of ``kind`` (its own over the shared ones)."""

    def create(self, kind: str, name: str, **overrides: Any) -> Any:
        """Plugin ``name`` of ``kind`` built with this run's options for it, ``overrides`` winning; an unknown
        name is an ArqbenchError naming the registered ones."""


class CostLedger(Protocol):
    """Where a search (and the certifiers and caches it uses) reports what its time does not show: cached work
    it read instead of computing, counted once per item at the seconds it took when measured, and time blocked
    on another process's lock, which is not search work. A key names one cached item, the same in every
    process that reads it."""

    def reused(self, key: str, seconds: float) -> None:
        """Cached item ``key`` was read; it took ``seconds`` to measure. Counted once per key."""

    def measured(self, key: str) -> None:
        """Item ``key`` was computed here (its time is own work): a later read of it is not reuse."""

    def waited(self, seconds: float) -> None:
        """Seconds blocked on another process's lock."""


# ---- values plugins and the core exchange ---------------------------------------------------------------------

@dataclass(frozen=True)
class LayerInfo:
    """One quantizable (Conv2d/Linear) layer of a model, as a search sees it, in execution order."""

    index: int
    name: str
    kind: str  # "conv" or "linear"
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    groups: int
    params: int  # weight elements
    in_size: int  # input feature-map height * width (1 for linear layers)
    macs: int  # multiply-accumulates of one forward of one input

    @property
    def depthwise(self) -> bool:
        return self.kind == "conv" and self.groups > 1 and self.groups == self.in_channels

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SmoothingConfig:
    """The settings of one certification (Cohen et al.'s n0, n, alpha) and of its sampling."""

    sigma: float
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch_size: int = 1000
    seed: int = 0
    precision: str = "fp32"  # of the base classifier's forward passes (fp32, tf32, bf16, fp16)


@dataclass
class Certificate:
    """One example's certificate: with probability >= 1 - alpha, the smoothed classifier returns ``prediction``
    within L2 ``radius`` of the input (or abstains)."""

    index: int
    label: int
    prediction: int  # ABSTAIN (-1) when the smoothed classifier abstains
    radius: float  # 0.0 when abstaining
    p_lower: float
    count: int  # samples (of ``n``) that voted for the prediction
    n: int
    seconds: float
    details: CertificateDetails = field(default_factory=dict)  # certifier-specific, e.g. IRS's disagreement bound

    @property
    def correct(self) -> bool:
        return self.prediction == self.label

    def as_dict(self) -> dict:
        return asdict(self)


class CertificateDetails(TypedDict, total=False):
    """``Certificate.details``: what a certifier says beyond the certificate. Every key is optional; searches read
    these to score a candidate without re-certifying it (``arq``'s predicted estimator)."""

    c_a: int  # the class the selection chose (kept when the certificate abstains)
    fallback: bool  # an incremental certifier certified this example from scratch
    n_p: int  # samples the modified model spent
    zeta: float  # upper bound on P(f_p(x+e) != f(x+e)) (incremental certificates)
    disagreements: int  # of the n_p replayed samples, those where f_p and f differ
    float_count: int  # of the reference's float_n estimation samples, those voting c_a
    float_n: int
    float_agree: int  # of the first n_p replayed samples, those where f votes c_a
    candidate_agree: int  # of the same samples, those where f_p votes c_a


@dataclass
class Reference:
    """The unmodified (float) model a certified model derives from, for incremental certifiers.

    ``key`` names it and the data its examples come from: certifiers cache what they compute about it
    under that key. ``ledger`` (a ``CostLedger``, set when a search certifies): a certifier that reads cached
    work about the reference instead of computing it reports each item there, so the search's cost counts it
    once.
    """

    model: nn.Module
    key: dict = field(default_factory=dict)
    ledger: "CostLedger | None" = None


@dataclass(frozen=True)
class QuantParams:
    """One quantized Conv2d/Linear as integers: ``weight * weight_scale`` (per output channel) is the weight it
    computes with, ``round(x / input_scale)`` clipped to ``input_levels`` its input's integer grid."""

    weight: torch.Tensor  # int8, the layer's weight shape, values within weight_levels
    weight_scale: torch.Tensor  # float32, one per output channel
    weight_levels: tuple[int, int]  # (q_min, q_max) of the weight grid, e.g. (-7, 7) at 4 bits
    input_scale: float
    input_levels: tuple[int, int]  # (q_min, q_max) of the input grid: (0, 2^b - 1) unsigned, else signed


@dataclass
class SearchResult:
    """What a search returns: the policy it ships and the record of how it found it."""

    policy: Policy
    info: SearchInfo = field(default_factory=dict)


class SearchInfo(TypedDict, total=False):
    """``SearchResult.info``: saved with the result. Any other key is the method's own record; these are read by
    the core and the report."""

    reused_s: float  # files written before searches reported to ``SearchContext.ledger``: cached seconds reused
    history: list[dict]  # scored candidates: {"episode", "policy", "cost", "reward", "revisit", and its scores}
    best_episode: int  # the history entry that shipped
    profile: list[dict]  # a sensitivity profile's rows: {"layer", "w_bits", "a_bits", "acr", "acr_drop", ...}
    metric: str  # the profile's metric


@dataclass(frozen=True)
class TrainRecipe:
    """Noise-augmented SGD with step decay (Cohen et al.'s recipe, scaled per benchmark)."""

    epochs: int
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 256
    lr_step: int = 30  # epochs between lr decays
    lr_gamma: float = 0.1


@dataclass
class Splits:
    """``train`` may be None (e.g. ImageNet with only ``val/``): the protocol then fine-tunes and searches
    on test images outside the certification subset. ``train_eval``: the training images without
    augmentation (same order), used for the search split; None when ``train`` does not augment."""

    train: Dataset | None
    test: Dataset
    train_eval: Dataset | None = None


class DataSizes(TypedDict, total=False):
    """``Benchmark.data_sizes``: images in the full dataset's splits, for estimates made where the data is not
    (``arqbench run --dry-run``)."""

    train: int
    test: int


TRAIN_COST = 3.0  # forward-equivalents of one training sample (forward + backward)


@dataclass(frozen=True)
class Workload:
    """A cell as a search's ``estimate`` sees it: no model, no data, only their sizes and the settings. Costs
    are counted in noisy forward passes of one input; a training sample costs ``train_cost`` forwards."""

    layers: list[LayerInfo]
    benchmark: "Benchmark"
    protocol: RunProtocol
    smoothing: SmoothingConfig  # the final certification's settings
    budget: float
    search_images: int  # size of the search split
    finetune_images: int  # size of the fine-tune split
    train_cost: float = TRAIN_COST

    def finetune_forwards(self, steps: int | None) -> float:
        """Forward-equivalents of ``steps`` SGD steps of the protocol's fine-tune (a candidate's short one;
        ``None``: the whole final fine-tune, its epochs over the fine-tune split)."""
        batch = min(self.benchmark.finetune.batch_size, self.finetune_images)
        if steps is None:
            steps = math.ceil(self.finetune_images / max(1, batch)) * self.protocol.finetune_epochs
        return steps * batch * self.train_cost

    def certify_forwards(self, images: int, certifier: Any, config: SmoothingConfig) -> float:
        """Forwards of certifying ``images`` examples: n0 + n each, or n0 + the certifier's own ``samples(config)``
        where it is an ``IncrementalCertifier``."""
        samples = certifier.samples(config) if callable(getattr(certifier, "samples", None)) else config.n
        return images * (config.n0 + samples)


@dataclass(frozen=True)
class Cost:
    """A search's estimate in parts, for work it caches: ``own`` forwards this cell spends, and ``shared``,
    ``{key: forwards}`` of work cached per base model under ``key`` (hashable: the settings the cache is keyed
    by, e.g. the seed) that every cell with the same key reuses. A sweep's estimate counts each key once per
    base model (benchmark and sigma), in the first cell that needs it."""

    own: float = 0.0
    shared: dict[Hashable, float] = field(default_factory=dict)


# Benchmark settings of 0.1 that became plugin options (removed in 0.4): setting: (plugin, option, what it is now)
_REMOVED_DEFAULTS = {"episodes": ("*", "episodes", "an option of the RL searches (haq, arq)"),
                     "np": ("irs", "n_p", "the irs certifier's option n_p")}


def _removed_settings(benchmark: Benchmark, gamma: float | None) -> None:
    """Refuse 0.1's ``Benchmark(gamma=...)`` and ``defaults={"episodes": ..., "np": ...}`` with a TypeError
    saying what to write instead."""
    if gamma is not None:
        raise TypeError(f"Benchmark(gamma={gamma}) was removed in arqbench 0.4: gamma is an option of the irs "
                        f"certifier; write defaults={{'options': {{'irs': {{'gamma': {gamma}}}}}}}")
    for key, value in benchmark.defaults.items():
        if key in _REMOVED_DEFAULTS:
            plugin, option, what = _REMOVED_DEFAULTS[key]
            raise TypeError(f"Benchmark defaults['{key}'] was removed in arqbench 0.4: it is {what}; write "
                            f"defaults={{'options': {{'{plugin}': {{'{option}': {value}}}}}}}")
