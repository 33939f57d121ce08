"""Running a certifier over the protocol's fixed certification subset."""

from torch import nn

from arqbench.console import progress
from arqbench.contract import Reference  # noqa: F401 (the core's name for it)
from arqbench.models.data import examples
from arqbench.smoothing.core import Certificate, SmoothingConfig


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
