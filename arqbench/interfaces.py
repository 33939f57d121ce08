"""The plugin contract: what the object a plugin registers must do, one ``typing.Protocol`` per kind.

A plugin registers ``register(name, factory)`` from a hook of ``arqbench.hookspecs``; ``factory(**options)``
builds the object. The factory's keyword parameters are the plugin's options: ``--option NAME.KEY=VALUE``
sets them, ``arqbench list --options NAME`` lists them, every result records them, and a key the
factory does not take is refused before any work. The object then follows its kind's Protocol below
(each is ``runtime_checkable``, so ``isinstance(obj, Certifier)`` checks the methods are there; the tests
also check their signatures for every first-party plugin).

The types these methods exchange are imported here, so a plugin can take everything it needs from this
module: ``Policy`` (``{layer name: (weight bits, activation bits)}``), ``LayerInfo``, ``SmoothingConfig``,
``Certificate``, ``Reference``, ``SearchContext``, ``SearchResult``, ``Splits``, ``TrainRecipe``, ``QuantParams``,
``Workload``, ``Cost``.
"""

from pathlib import Path
from typing import Iterable, Protocol, Sequence, runtime_checkable

import torch
from torch import nn

from arqbench.models.benchmark import Splits, TrainRecipe
from arqbench.quantization.layers import LayerInfo
from arqbench.quantization.policy import Policy
from arqbench.quantization.qdq import QuantParams
from arqbench.search.context import SearchContext, SearchResult
from arqbench.search.estimate import Cost, Workload
from arqbench.smoothing.certification import Reference
from arqbench.smoothing.core import Certificate, SmoothingConfig

__all__ = ["Quantizer", "WeightQuantizer", "QuantizedLayer", "Certifier", "Search", "EstimatingSearch", "CostModel",
           "Benchmark", "Policy", "LayerInfo", "QuantParams", "SmoothingConfig", "Certificate", "Reference",
           "SearchContext", "SearchResult", "Workload", "Cost", "Splits", "TrainRecipe"]


@runtime_checkable
class Quantizer(Protocol):
    """Turns (model, bit policy) into a fake-quantized model that still trains."""

    def quantize(self, model: nn.Module, policy: Policy, calibration: Sequence[torch.Tensor]) -> nn.Module:
        """A quantized **copy** of ``model`` (the float model is never modified): every Conv2d/Linear layer
        named in ``policy`` computes with its weights at ``w_bits`` and its input activation at ``a_bits``
        (at most 2^bits levels each). ``calibration`` is a list of noisy input batches, the same for every
        method of a run, to fix or initialise activation ranges. The copy must still train: gradients reach
        its parameters (straight-through rounding), so the protocol's fine-tune can run on it; in eval mode
        it must compute the same function on every call (the certificate is of that function).

        Saved models (``arqbench.pipeline.saved``) are rebuilt without data: ``quantize(fresh model, policy, [])`` (an
        empty ``calibration``) followed by ``load_state_dict`` of the saved copy must give a model that
        computes exactly the saved one's function, bit for bit. So whatever calibration or training sets
        must live in the state_dict (parameters, buffers), and anything derived from it and kept elsewhere
        (a Python number cached for speed) must be recomputed on loading, e.g. by a
        ``register_load_state_dict_post_hook``."""


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
        """The weights as integers with one scale per output channel and the input activation's grid
        (``arqbench.quantization.qdq.QuantParams``), computing the same function as the module does."""


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
        ||x' - x||_2 < ``radius``. Noise must be drawn from ``arqbench.smoothing.core.generator(device,
        config.seed, index, phase)`` so a certificate does not depend on batching or sharding and can be
        replayed. ``reference`` (the unmodified float model and a cache key) is given to incremental
        certifiers; a certifier that needs it and gets None raises ArqbenchError."""


@runtime_checkable
class Search(Protocol):
    """Finds a bit policy under the cost budget."""

    def search(self, ctx: SearchContext) -> SearchResult:
        """A policy for every layer in ``ctx.layers`` with bits in [2, 8], layers in ``ctx.fixed`` at
        (8, 8), activation bits 8 unless ``ctx.search_activations``, and
        ``ctx.cost_fraction(policy) <= ctx.budget`` (raise ``arqbench.errors.InfeasibleBudget`` when no
        policy can meet it). It may use only what ``ctx`` offers: the search split, never the
        certification subset. ``SearchResult.info`` is saved with the result; ``info["reused_s"]``, if
        set, is the seconds of cached work the search reused (counted in its reported search cost)."""


@runtime_checkable
class EstimatingSearch(Search, Protocol):
    """Optional addition to a Search, for ``arqbench run --dry-run``."""

    def estimate(self, work: Workload) -> float | Cost:
        """About how many noisy forward passes of one input the search costs on ``work``
        (``arqbench.search.estimate.Workload``: the layers, protocol, split sizes, but no model or data). A
        training step counts as ``work.train_cost`` forwards per sample. Work cached and reused by other cells
        (a profile per base model and seed that every budget reuses) is returned as ``Cost.shared`` under its
        cache key, so a sweep counts it once. A search without this method is counted as costing nothing (it
        only does arithmetic on the layers)."""


@runtime_checkable
class CostModel(Protocol):
    """Maps (layers, policy) to a cost; budgets are fractions of the float model's cost."""

    def cost(self, layers: list[LayerInfo], policy: Policy) -> float:
        """A non-negative cost, non-decreasing in every layer's bits. The float model is the policy with
        every layer at (32, 32). Searches that solve an integer program over layers (``hawq``) need the
        cost to be a sum over layers; they check that and refuse a cost model that is not."""


@runtime_checkable
class Benchmark(Protocol):
    """A (model, dataset, sigma-specific base checkpoint) recipe; ``arqbench.models.benchmark.Benchmark``
    is a base class that implements the optional methods."""

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W) of one unnormalised input in [0, 1]
    radii: tuple[float, ...]  # the certified-accuracy radii reported
    recipe: TrainRecipe  # noise-augmented training of the base model
    finetune: TrainRecipe  # the protocol's quantization-aware fine-tune
    defaults: dict  # protocol defaults and, under "options", plugin options for this benchmark
    train_on_first_use: bool  # a missing base model is trained (small benchmarks) instead of skipped
    search_images: int  # size of the search split held out of the training data
    architecture: str  # recorded with checkpoints; a checkpoint of another architecture is refused
    normalizations: dict  # name -> Normalization a checkpoint may have been trained with (--normalization NAME)
    layout_normalizations: dict  # checkpoint layout ("cohen", "state_dict") -> the normalization it implies

    def build_model(self) -> nn.Module:
        """A freshly initialised model whose first layer normalises its input, so noise is added in input
        space; its Conv2d/Linear layers are what policies name."""

    def splits(self, data_root: Path | None) -> Splits:
        """The data (inputs in [0, 1]); raise ``arqbench.errors.SkipBenchmark`` naming the path read when
        it is missing."""

    def checkpoint_paths(self, sigma: float, data_root: Path | None) -> list[Path]:
        """Optional: where a user's checkpoint for ``sigma`` is looked for by convention, first found first."""

    def tied_layers(self, model: nn.Module) -> list[list[str]]:
        """Optional: groups of layer names that must share one precision (e.g. layers reading one tensor)."""
