"""Search ``uniform``: the highest single weight bit-width (activations 8, or the same when searched)
whose cost meets the budget."""

from arqbench.contract import MAX_BITS, MIN_BITS, SearchResult
from arqbench.errors import InfeasibleBudget
from arqbench.hookspecs import hookimpl
from arqbench.toolkit import uniform_policy


class Uniform:
    def search(self, ctx) -> SearchResult:
        for bits in range(MAX_BITS, MIN_BITS - 1, -1):
            a_bits = bits if ctx.search_activations else MAX_BITS
            policy = uniform_policy(ctx.layers, bits, a_bits, ctx.fixed)
            if ctx.cost_fraction(policy) <= ctx.budget:
                return SearchResult(policy, {"bits": bits})
        raise InfeasibleBudget(f"no uniform bit-width in [{MIN_BITS}, {MAX_BITS}] meets budget {ctx.budget:.4%}")


@hookimpl
def register_search(register):
    register("uniform", Uniform)
