"""What the cells of one (benchmark, sigma) share: the protocol's data splits, the float base model, its layers."""

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from arqbench.models.base_model import base_model, fingerprint
from arqbench.models.benchmark import Benchmark
from arqbench.models.data import ProtocolData
from arqbench.pipeline.config import Protocol
from arqbench.quantization import policy as policies
from arqbench.quantization.layers import LayerInfo, profile_layers
from arqbench.smoothing.certification import Reference


@dataclass
class Prepared:
    """Everything shared by the cells of one (benchmark, sigma): data, base model, layer profile."""

    benchmark: Benchmark
    sigma: float
    data: ProtocolData
    model: nn.Module
    source: dict
    layers: list[LayerInfo]
    fingerprint: str
    base_seed: int = 0  # the training seed of the base model (Protocol.base_seed)

    @property
    def reference_key(self) -> dict:
        """Names the float base model (by its weights) for caches keyed by it."""
        return {"benchmark": self.benchmark.name, "sigma": self.sigma, "model": self.fingerprint}

    def reference(self, data: str = "test") -> Reference:
        """The float model as the reference of incremental certification on split ``data`` ("test", "search")."""
        return Reference(self.model, {**self.reference_key, "data": data})

    def fixed_layers(self, protocol: Protocol) -> set[str]:
        return policies.fixed_layers(self.layers, protocol.keep_ends)


def prepare(benchmark: Benchmark, sigma: float, protocol: Protocol, device: torch.device, *,
            data_root: Path | None = None, checkpoint: Path | None = None, normalization: str | None = None,
            workers: int = 0, base_seed: int = 0, base_models: Path | None = None) -> Prepared:
    """The data splits, base model and layers of (benchmark, sigma, ``base_seed``): the base model from
    ``checkpoint``, the benchmark's conventional places under ``data_root``, the published folder ``base_models``
    or arqbench's cache (``models.base_model``), with the input ``normalization`` it was trained with (when the
    checkpoint cannot tell)."""
    splits = benchmark.splits(data_root)
    data = ProtocolData.from_splits(splits, protocol.test_images, benchmark.search_images, protocol.subset, workers,
                                    benchmark.name)
    model, source = base_model(benchmark, sigma, splits, device, checkpoint, data_root, normalization, base_seed,
                               base_models)
    layers = profile_layers(model, benchmark.input_shape)
    return Prepared(benchmark, sigma, data, model, source, layers, fingerprint(model), base_seed)
