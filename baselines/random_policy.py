"""Search ``random``: a seeded random policy pushed under the budget by the action wall (a sanity floor)."""

import random

from arqbench.contract import MAX_BITS, MIN_BITS, SearchResult
from arqbench.hookspecs import hookimpl


class RandomPolicy:
    def search(self, ctx) -> SearchResult:
        rng = random.Random(ctx.seed)
        policy = {}
        for layer in ctx.layers:
            if layer.name in ctx.fixed:
                policy[layer.name] = (MAX_BITS, MAX_BITS)
            else:
                a_bits = rng.randint(MIN_BITS, MAX_BITS) if ctx.search_activations else MAX_BITS
                policy[layer.name] = (rng.randint(MIN_BITS, MAX_BITS), a_bits)
        return SearchResult(ctx.within_budget(policy))


@hookimpl
def register_search(register):
    register("random", RandomPolicy)
