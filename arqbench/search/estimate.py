"""What a search is told to estimate its cost before any work (``arqbench run --dry-run``).

Costs are counted in noisy forward passes of one input through the benchmark's model (the dry run
multiplies them by the model's MACs and divides by a measured forward throughput). A training step
counts ``TRAIN_COST`` forwards per sample: a forward and a backward pass, about twice a forward's work.
A search whose work is cached and reused by other cells says so with ``Cost``.
"""

from dataclasses import dataclass, field
from typing import Any, Hashable

from arqbench.quantization.layers import LayerInfo
from arqbench.smoothing.core import SmoothingConfig

TRAIN_COST = 3.0  # forward-equivalents of one training sample (forward + backward)


@dataclass(frozen=True)
class Workload:
    """A cell as a search's ``estimate`` sees it: no model, no data, only their sizes and the settings."""

    layers: list[LayerInfo]
    benchmark: Any  # the benchmark plugin object (its fine-tune recipe, num_classes, ...)
    protocol: Any  # the run's Protocol: ``protocol.create(kind, name)`` builds a plugin with the run's options
    smoothing: SmoothingConfig  # the final certification's settings
    budget: float
    search_images: int  # size of the search split
    finetune_images: int  # size of the fine-tune split
    train_cost: float = TRAIN_COST

    def finetune_forwards(self, steps: int) -> float:
        """Forward-equivalents of ``steps`` SGD steps of the protocol's fine-tune (a candidate's short one)."""
        return steps * min(self.benchmark.finetune.batch_size, self.finetune_images) * self.train_cost

    def certify_forwards(self, images: int, certifier: Any, config: SmoothingConfig) -> float:
        """Forwards of certifying ``images`` examples: n0 + n each, or n0 + the certifier's own ``samples(config)``
        where it has that method (an incremental certifier's N_p)."""
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
