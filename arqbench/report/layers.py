"""The quantizable layers behind a result file, and each layer's share of the float model's cost."""

from functools import lru_cache

from arqbench import plugins
from arqbench.errors import ArqbenchError
from arqbench.quantization.layers import LayerInfo, profile_layers
from arqbench.quantization.policy import FLOAT_BITS


def layers_of(result: dict) -> list[LayerInfo] | None:
    """The result's layer profile (recorded with every cell), else the benchmark plugin's model profiled afresh
    (results written before layers were recorded), else None (the benchmark plugin is not installed, or its
    model's layers are not the policy's)."""
    recorded = result.get("layers")
    if recorded:
        return [LayerInfo(**layer) for layer in recorded]
    try:
        layers = list(_profiled(result["benchmark"]))
    except ArqbenchError:
        return None
    policy = result.get("policy")
    return layers if not policy or set(policy) == {l.name for l in layers} else None  # not this model's layers


@lru_cache(maxsize=None)
def _profiled(benchmark: str) -> tuple[LayerInfo, ...]:
    bench = plugins.create("benchmark", benchmark)
    return tuple(profile_layers(bench.build_model().eval(), bench.input_shape))


def float_cost_shares(layers: list[LayerInfo], cost_model: str) -> dict[str, float]:
    """Each layer's fraction of the float model's cost under ``cost_model`` (for an additive cost model)."""
    model = plugins.create("cost_model", cost_model)
    full = {l.name: (FLOAT_BITS, FLOAT_BITS) for l in layers}
    total = model.cost(layers, full) or 1.0
    return {l.name: model.cost([l], {l.name: full[l.name]}) / total for l in layers}


def network_order(result: dict, layers: list[LayerInfo] | None) -> list[str]:
    """Layer names in execution order: the profile's, else the policy's own order."""
    if layers:
        return [l.name for l in layers]
    return list((result.get("policy") or {}).keys())
