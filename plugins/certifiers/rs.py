"""Certifier ``rs``: Cohen et al.'s CERTIFY on every example (``arqbench.toolkit.certify_many``)."""

from arqbench.hookspecs import hookimpl
from arqbench.toolkit import batched, certify_many, group_size


class RandomizedSmoothing:
    def certify(self, model, examples, config, num_classes, reference=None):
        """One Certificate per (index, x, label) in ``examples``; ``reference`` is not needed."""
        size = group_size(config, min(config.n0, config.n))
        return [cert for group in batched(examples, size) for cert in certify_many(model, group, config, num_classes)]


@hookimpl
def register_certifier(register):
    register("rs", RandomizedSmoothing, default=True)
