"""Certifier ``rs``: Cohen et al.'s CERTIFY on every example (``arqbench.smoothing``)."""

from arqbench.hookspecs import hookimpl
from arqbench.smoothing import certify


class RandomizedSmoothing:
    def certify(self, model, examples, config, num_classes, reference=None):
        """One Certificate per (index, x, label) in ``examples``; ``reference`` is not needed."""
        return [certify(model, x, label, index, config, num_classes) for index, x, label in examples]


@hookimpl
def register_certifier(register):
    register("rs", RandomizedSmoothing)
