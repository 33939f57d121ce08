"""What a search method gets (``SearchContext``) and returns (``SearchResult``).

A search plugin's object has ``search(ctx) -> SearchResult``. Everything a method may use (the float
model, its layers, the run's quantizer and cost model, the budget, a held-out search split of the
training data, the run's other plugins with their options) comes through the context, so every method
runs under the same protocol and differs only by the policy it returns. A method reports the cached work
it reused and its waits on other processes to ``ctx.ledger`` (``arqbench.search.ledger``), which the cell
reads for its search time.
"""

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Iterator

import torch
from torch import nn
from torch.utils.data import Subset

from arqbench import checks, console
from arqbench.contract import SearchResult  # noqa: F401 (searches' result, re-exported for the core)
from arqbench.models.benchmark import Benchmark
from arqbench.models.data import ProtocolData, noisy_batches
from arqbench.models.finetune_recipe import FinetuneRecipe
from arqbench.models.training import accuracy, finetune
from arqbench.quantization.equalization import equalize
from arqbench.quantization import policy as policies
from arqbench.quantization.layers import LayerInfo
from arqbench.search.ledger import Ledger
from arqbench.smoothing.certification import Reference
from arqbench.smoothing.core import SmoothingConfig


@dataclass
class SearchContext:
    model: nn.Module  # the float base model, eval mode, on ``device``
    layers: list[LayerInfo]
    benchmark: Benchmark
    data: ProtocolData
    quantizer: Any
    cost_model: Any
    budget: float
    sigma: float
    seed: int
    device: torch.device
    fixed: set[str]  # layers held at 8/8 bits
    search_activations: bool
    smoothing: SmoothingConfig  # the final certification's settings (searches may scale n down)
    protocol: Any  # the run's Protocol: ``protocol.create(kind, name)`` builds a plugin with the run's options
    reference_key: dict = field(default_factory=dict)  # identifies the base model for caches
    wait_for_shared: bool = True  # False: raise arqbench.errors.Busy rather than wait for another process's work
    ledger: Ledger = field(default_factory=Ledger)  # cached work reused, waits (``arqbench.search.ledger``)
    float_cost: float = 0.0
    # ``with ctx.progress(description, total) as advance:`` shows a search's steps (episodes, points) with the
    # time left, on a terminal only; replace it to follow a search elsewhere (a no-op: ``quietly``)
    progress: Callable[[str, int], ContextManager[Callable[[], None]]] = console.steps
    # groups of layers that must share one precision: the benchmark's ``tied_layers`` of the model (None: ask it)
    tied: list[list[str]] | None = None

    def __post_init__(self):
        if self.tied is None:
            names = {layer.name for layer in self.layers}
            groups = ([name for name in group if name in names] for group in self.benchmark.tied_layers(self.model))
            self.tied = [group for group in groups if len(group) > 1]
        self.float_cost = self.cost_model.cost(self.layers, policies.float_policy(self.layers))
        self._calibration: list[torch.Tensor] | None = None
        self._equalized: nn.Module | None = None
        self.finetunes = 0  # candidate fine-tunes run, and how many of them diverged and reran (``finetune``)
        self.frozen_batchnorm_finetunes = 0

    def cost_fraction(self, policy: policies.Policy) -> float:
        return self.cost_model.cost(self.layers, policy) / self.float_cost

    def within_budget(self, policy: policies.Policy) -> policies.Policy:
        """The action wall: tie the tied layers, then lower bits (last layer first) until the policy meets the
        budget."""
        return policies.fit_to_budget(policy, self.layers, self.cost_fraction, self.budget, self.fixed,
                                      self.search_activations, self.tied)

    def calibration(self) -> list[torch.Tensor]:
        """The fixed noisy batches every candidate's activation ranges are calibrated on."""
        if self._calibration is None:
            self._calibration = calibration_batches(self.data, self.sigma, self.device, self.seed)
        return self._calibration

    def quantize(self, policy: policies.Policy) -> nn.Module:
        """``policy``'s model by the run's quantizer, from the float model equalized as the protocol's
        ``finetune_recipe`` says (``equalized``), calibrated."""
        if self._equalized is None:
            self._equalized = equalized(self.model, self.tuning())
        name = getattr(self.protocol, "quantizer", type(self.quantizer).__name__)
        return checks.quantize(self.quantizer, name, self._equalized, policy, self.calibration()).eval()

    def tuning(self) -> FinetuneRecipe:
        """The protocol's fine-tune remedies (the default recipe for a protocol that names none)."""
        tuning = getattr(self.protocol, "tuning", None)
        return tuning() if tuning else FinetuneRecipe()

    def accuracy(self, model: nn.Module, indices: list[int] | None = None) -> float:
        """Clean top-1 accuracy on the search split (on its images ``indices`` where given)."""
        data = self.data.search if indices is None else Subset(self.data.search, list(indices))
        return accuracy(model, data, self.device, workers=self.data.workers)

    def finetune(self, model: nn.Module, steps: int | None) -> nn.Module:
        """The protocol's noise-augmented fine-tune (the benchmark's recipe, same seed), cut to ``steps``
        SGD steps: the short fine-tune a candidate gets before it is scored, so a search rates the kind of
        model that ships; ``None``: the whole of it (the protocol's epochs), so the candidate is the model the
        protocol ships for its policy. Deterministic for a given policy, so a revisited policy scores the same;
        one that diverges reruns with BatchNorm frozen, as the final fine-tune would (``arqbench.models.training``)."""
        epochs = getattr(self.protocol, "finetune_epochs", self.benchmark.finetune.epochs)
        if (steps is None and epochs > 0) or (steps is not None and steps > 0):
            self.finetunes += 1
            self.frozen_batchnorm_finetunes += finetune(
                model, self.data.finetune, self.benchmark.finetune, self.sigma, self.device, self.seed,
                tuning=self.tuning(), description="candidate fine-tune", workers=self.data.workers,
                **({"epochs": epochs} if steps is None else {"steps": steps}))
        return model.eval()

    def candidate(self, policy: policies.Policy, finetune_steps: int | None) -> nn.Module:
        """The model a search scores for ``policy``: quantized with the run's quantizer, then fine-tuned."""
        return self.finetune(self.quantize(policy), finetune_steps)

    def reference(self) -> Reference:
        """The float model as the reference of incremental certification on the search split."""
        return Reference(self.model, {**self.reference_key, "data": "search"}, self.ledger)


def calibration_batches(data: ProtocolData, sigma: float, device: torch.device, seed: int,
                        batches: int = 4, batch_size: int = 128) -> list[torch.Tensor]:
    return list(noisy_batches(data.finetune, sigma, batches, batch_size, device, seed, data.workers))


def equalized(model: nn.Module, tuning: FinetuneRecipe) -> nn.Module:
    """The float ``model`` cross-layer equalized as ``tuning.equalize`` says (``model`` itself for "none")."""
    if tuning.equalize == "none":
        return model
    return equalize(model, relu6_as_relu=tuning.equalize == "relu6")[0]


@contextmanager
def quietly(description: str, total: int) -> Iterator[Callable[[], None]]:
    """A ``SearchContext.progress`` that shows nothing."""
    yield lambda: None
