"""Search ``haq`` (Wang et al., CVPR 2019): DDPG picks bits; reward = 0.1 * (accuracy change in %-points).

Each candidate policy is quantized with the run's quantizer and given the protocol's noise-augmented
fine-tune cut to ``finetune_steps`` SGD steps (HAQ's reference fine-tunes every candidate briefly before
scoring it, for the same reason: score the kind of model that ships); its reward is then its clean top-1
accuracy on the search split held out of the training data (never the certification subset), against the
float model's. Options: ``finetune_steps`` and every setting of the agent (``arqbench.search.agent``).
"""

from dataclasses import dataclass

from arqbench.contract import SearchContext, SearchResult
from arqbench.hookspecs import hookimpl
from arqbench.toolkit import AgentSettings, rl_search

FINETUNE_STEPS = 8  # per candidate; see the README for how this default was measured


@dataclass(frozen=True)
class HAQ(AgentSettings):
    finetune_steps: int = FINETUNE_STEPS

    def search(self, ctx: SearchContext) -> SearchResult:
        float_acc = ctx.accuracy(ctx.model)

        def reward(policy):
            acc = ctx.accuracy(ctx.candidate(policy, self.finetune_steps))
            return 0.1 * 100 * (acc - float_acc), {"accuracy": acc}

        result = rl_search(ctx, reward, self, "haq search")
        result.info.update({"float_accuracy": float_acc, "finetune_steps": self.finetune_steps})
        return result

    def estimate(self, work) -> float:
        """The float model's accuracy, then per episode a candidate's short fine-tune and its accuracy."""
        candidate = work.search_images + work.finetune_forwards(self.finetune_steps)
        return work.search_images + self.episodes * candidate


@hookimpl
def register_search(register):
    register("haq", HAQ)
