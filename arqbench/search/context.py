"""What a search method gets (``SearchContext``) and returns (``SearchResult``).

A search plugin's object has ``search(ctx) -> SearchResult``. Everything a method may use
(the float model, its layers, the run's quantizer and cost model, the budget, a held-out
search split of the training data, caches) comes through the context, so every method runs
under the same protocol and differs only by the policy it returns.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from arqbench.files import home
from arqbench.models.benchmark import Benchmark
from arqbench.models.data import ProtocolData, noisy_batches
from arqbench.models.training import accuracy, train
from arqbench.quantization import policy as policies
from arqbench.quantization.layers import LayerInfo
from arqbench.smoothing.core import SmoothingConfig


@dataclass
class SearchResult:
    policy: policies.Policy
    info: dict = field(default_factory=dict)  # method-specific record saved with the cell (history, traces, ...)


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
    settings: dict = field(default_factory=dict)  # run-wide search settings: episodes, np, certifier, ...
    reference_key: dict = field(default_factory=dict)  # identifies the base model for caches
    float_cost: float = 0.0

    def __post_init__(self):
        self.float_cost = self.cost_model.cost(self.layers, policies.float_policy(self.layers))
        self._calibration: list[torch.Tensor] | None = None

    def cost_fraction(self, policy: policies.Policy) -> float:
        return self.cost_model.cost(self.layers, policy) / self.float_cost

    def fit(self, policy: policies.Policy) -> policies.Policy:
        """The action wall: lower bits (last layer first) until the policy meets the budget."""
        return policies.fit_to_budget(policy, self.layers, self.cost_fraction, self.budget, self.fixed,
                                      self.search_activations)

    def calibration(self) -> list[torch.Tensor]:
        """The fixed noisy batches every candidate's activation ranges are calibrated on."""
        if self._calibration is None:
            self._calibration = calibration_batches(self.data, self.sigma, self.device, self.seed)
        return self._calibration

    def quantize(self, policy: policies.Policy) -> nn.Module:
        return self.quantizer.quantize(self.model, policy, self.calibration()).eval()

    def accuracy(self, model: nn.Module) -> float:
        """Clean top-1 accuracy on the search split."""
        return accuracy(model, self.data.search, self.device)

    def finetune(self, model: nn.Module, epochs: int) -> nn.Module:
        """A short noise-augmented fine-tune on the fine-tune split (the benchmark's fine-tune recipe)."""
        if epochs > 0:
            train(model, self.data.fit, self.benchmark.finetune, self.sigma, self.device, self.seed, epochs=epochs,
                  description="search fine-tune")
        return model.eval()

    def cache_dir(self, kind: str) -> Path:
        return home() / kind


def calibration_batches(data: ProtocolData, sigma: float, device: torch.device, seed: int,
                        batches: int = 4, batch_size: int = 128) -> list[torch.Tensor]:
    return list(noisy_batches(data.fit, sigma, batches, batch_size, device, seed))
