"""What a policy costs under every registered cost model, as recorded with each result."""

from arqbench import plugins
from arqbench.quantization.layers import LayerInfo
from arqbench.quantization.policy import Policy, float_policy


def cost_summary(layers: list[LayerInfo], policy: Policy | None, protocol) -> dict:
    """Each registered cost model's cost of ``policy`` (None: the float model) and its fraction of float,
    plus the run's cost model (``protocol.cost_model``, what the budget is measured in) and its fraction.
    Cost models are built with the run's options for them (``protocol.create``)."""
    full = float_policy(layers)
    policy = policy or full
    models = {}
    for name in plugins.names("cost_model"):
        model = protocol.create("cost_model", name)
        cost, float_cost = model.cost(layers, policy), model.cost(layers, full)
        models[name] = {"cost": cost, "fraction": cost / float_cost if float_cost else float("nan")}
    run = protocol.cost_model
    return {"cost_model": run, "fraction": models[run]["fraction"], "models": models}
