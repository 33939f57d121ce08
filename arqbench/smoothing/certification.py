"""Running a certifier over the protocol's fixed certification subset."""

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from arqbench.console import progress
from arqbench.models.data import examples
from arqbench.smoothing.core import Certificate, SmoothingConfig


@dataclass
class Reference:
    """The unmodified (float) model a certified model derives from, for incremental certifiers.

    ``key`` names it and the data its examples come from: certifiers cache what they compute about it
    under that key. ``ledger`` (set when a search certifies, ``arqbench.search.ledger.Ledger``): a certifier
    that reads cached work about the reference instead of computing it reports each item there
    (``ledger.reused(key, seconds)``), and each item it computes (``ledger.measured(key)``).
    """

    model: nn.Module
    key: dict = field(default_factory=dict)
    ledger: Any = None


def certify_subset(certifier, model: nn.Module, subset, config: SmoothingConfig, num_classes: int,
                   reference: Reference | None = None, description: str = "certify") -> list[Certificate]:
    """Certify each image of ``subset`` with a rich progress bar; returns the certificates in subset order."""
    with progress() as bar:
        task = bar.add_task(description, total=len(subset.indices))

        def advancing():
            for example in examples(subset):
                yield example
                bar.advance(task)

        return list(certifier.certify(model, advancing(), config, num_classes, reference=reference))
