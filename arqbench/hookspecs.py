"""The plugin contract: one ``register_<kind>(register)`` hook per plugin kind.

A plugin is a module (or object) with implementations of any of these hooks, registered under the
entry-point group ``arqbench`` (``[project.entry-points.arqbench]`` in its pyproject.toml), exactly as
arqbench's own quantizers, certifiers, searches, cost models and benchmarks are. Each hook is called
once, with one argument:

    register(name: str, factory: Callable[..., object], default: bool | str = False) -> None

to be called once per thing the plugin provides. ``name`` is how users choose it (unique per kind: a
clash is an error naming both plugins). ``factory(**options)`` builds the object; its keyword parameters
are the plugin's options (``--option NAME.KEY=VALUE``). What the object must do is its kind's Protocol in
``arqbench.contract``, named in each hook below. ``default=True`` makes it what a run uses when the user
names no plugin of its kind (the core names none itself); a string makes it the default for that use only
(``"profile"``: the certifier ``arqbench profile`` measures with). One default per kind and use: a second is
an error naming both plugins; `arqbench list` shows which they are.
"""

import pluggy

hookspec = pluggy.HookspecMarker("arqbench")
hookimpl = pluggy.HookimplMarker("arqbench")


@hookspec
def register_quantizer(register):
    """Register quantizers, objects following ``arqbench.contract.Quantizer``: ``quantize(model, policy,
    calibration)`` returns a fake-quantized copy that still trains (optionally ``quantize_weight``,
    ``contract.WeightQuantizer``, which sensitivity searches need).

    :param register: ``register(name, factory)``; e.g. ``register("linear", LinearQuantizer)``.
    """


@hookspec
def register_certifier(register):
    """Register certifiers, objects following ``arqbench.contract.Certifier``: ``certify(model, examples,
    config, num_classes, reference=None)`` returns one certificate per example, each holding with
    probability at least 1 - alpha (optionally ``samples(config)`` and ``stats``,
    ``contract.IncrementalCertifier``, when it reuses a cached certification of the reference).

    :param register: ``register(name, factory)``; e.g. ``register("rs", RandomizedSmoothing)``.
    """


@hookspec
def register_search(register):
    """Register search methods, objects following ``arqbench.contract.Search``: ``search(ctx)`` returns a
    bit policy within ``ctx.budget`` (and a record of how it was found).

    :param register: ``register(name, factory)``; e.g. ``register("hawq", Hawq)``.
    """


@hookspec
def register_cost_model(register):
    """Register cost models, objects following ``arqbench.contract.CostModel``: ``cost(layers, policy)``;
    budgets are fractions of the float model's cost.

    :param register: ``register(name, factory)``; e.g. ``register("bitops", BitOps)``.
    """


@hookspec
def register_benchmark(register):
    """Register benchmarks, objects following ``arqbench.contract.Benchmark``: a model, its data, its
    training recipe, protocol defaults (a subclass of ``arqbench.contract.Benchmark``).

    :param register: ``register(name, factory)``; e.g. ``register("digits", digits)``.
    """
