"""Cost models ``bitops`` (sum of MACs * b_w * b_a) and ``size`` (sum of params * b_w, in bits)."""

from arqbench.hookspecs import hookimpl


class BitOps:
    def cost(self, layers, policy) -> float:
        return float(sum(l.macs * policy[l.name][0] * policy[l.name][1] for l in layers))


class ModelSize:
    def cost(self, layers, policy) -> float:
        return float(sum(l.params * policy[l.name][0] for l in layers))


@hookimpl
def register_cost_model(register):
    register("bitops", BitOps, default=True)
    register("size", ModelSize)
