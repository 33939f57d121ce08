"""The plugin contract: one ``register_<kind>(register)`` hook per plugin kind.

A plugin implements any of these hooks and calls ``register(name, factory)`` once per
thing it provides. ``factory(**options)`` builds the object; the protocol each object
follows is described in ``arqbench.interfaces``. Names are unique per kind.
"""

import pluggy

hookspec = pluggy.HookspecMarker("arqbench")
hookimpl = pluggy.HookimplMarker("arqbench")


@hookspec
def register_quantizer(register):
    """Register quantizers: turn (model, bit policy) into a fake-quantized model that still trains."""


@hookspec
def register_certifier(register):
    """Register certifiers: per-example (prediction, radius) of a model smoothed with Gaussian noise."""


@hookspec
def register_search(register):
    """Register search methods: find a bit policy under a cost budget."""


@hookspec
def register_cost_model(register):
    """Register cost models: map (layer profile, policy) to a cost; budgets are fractions of float cost."""


@hookspec
def register_benchmark(register):
    """Register benchmarks: a (model, dataset, sigma-specific base checkpoint) recipe."""
