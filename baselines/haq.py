"""Search ``haq`` (Wang et al., CVPR 2019): DDPG picks bits; reward = 0.1 * (accuracy change in %-points).

Accuracy is the quantized model's clean top-1 on the search split held out of the training
data (never the certification subset), after an optional short fine-tune (``haq.finetune``).
"""

from dataclasses import fields

from arqbench.hookspecs import hookimpl
from arqbench.search.agent import AgentSettings, rl_search
from arqbench.search.context import SearchResult


class HAQ:
    def __init__(self, finetune: int = 0, **agent):
        names = {f.name for f in fields(AgentSettings)} - {"episodes"}
        unknown = set(agent) - names
        if unknown:
            raise TypeError(f"unknown option(s) {sorted(unknown)}; known: finetune, {', '.join(sorted(names))}")
        self.finetune, self.agent = finetune, agent

    def search(self, ctx) -> SearchResult:
        float_acc = ctx.accuracy(ctx.model)

        def reward(policy):
            model = ctx.finetune(ctx.quantize(policy), self.finetune)
            acc = ctx.accuracy(model)
            return 0.1 * 100 * (acc - float_acc), {"accuracy": acc}

        settings = AgentSettings(episodes=ctx.settings["episodes"], **self.agent)
        result = rl_search(ctx, reward, settings, "haq search")
        result.info["float_accuracy"] = float_acc
        return result


@hookimpl
def register_search(register):
    register("haq", HAQ)
