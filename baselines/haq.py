"""Search ``haq`` (Wang et al., CVPR 2019): DDPG picks bits; reward = 0.1 * (accuracy change in %-points).

Each candidate policy is quantized with the run's quantizer and given the protocol's noise-augmented
fine-tune cut to ``finetune_steps`` SGD steps (HAQ's reference fine-tunes every candidate briefly before
scoring it, for the same reason: score the kind of model that ships); its reward is then its clean top-1
accuracy on the search split held out of the training data (never the certification subset), against the
float model's. Options: ``finetune_steps`` (steps, or ``"final"``: the whole final fine-tune, so the candidate
is the model that ships), ``images`` (score on the split's first ``images`` only) and every setting of the agent
(``arqbench.search.agent``).

Re-scoring (``rescore_top`` = k > 0; off by default: ``benchmarks/rescoring.py`` measured no gain for haq, see
leaderboards/rescoring/ and the README): the k best distinct candidates are scored again by
the same reward (the same candidate fine-tune) on images of the search split the search reward never saw:
the ``rescore_images`` after the search's (default: all the rest), and the best re-score ships. The
reward has no noise samples to add, only images, so with re-scoring on and ``images`` unset the search
scores on the first half of the split and re-scores on the second.
"""

import functools
from dataclasses import dataclass

from arqbench.contract import SearchContext, SearchResult
from arqbench.errors import ArqbenchError
from arqbench.hookspecs import hookimpl
from arqbench.toolkit import AgentSettings, candidate_steps, rl_search

FINETUNE_STEPS = 8  # per candidate; see the README for how this default was measured


@dataclass(frozen=True)
class HAQ(AgentSettings):
    finetune_steps: int | str = FINETUNE_STEPS  # or "final": the candidate is the model the protocol ships
    images: int | None = None  # the search split's first ``images`` score candidates (None: all; half when re-scoring)
    rescore_images: int | None = None  # the re-score's: the split's images after the search's (None: all the rest)

    def __post_init__(self):
        super().__post_init__()
        candidate_steps(self.finetune_steps, "haq.finetune_steps")
        for name in ("images", "rescore_images"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ArqbenchError(f"haq.{name} must be a positive integer, got {value!r}")

    def search(self, ctx: SearchContext) -> SearchResult:
        searched, rescored = self.samples(len(ctx.data.search))
        reward = self.reward(ctx, searched)
        float_acc = reward.reference()
        rescore = self.reward(ctx, rescored) if rescored is not None else None
        result = rl_search(ctx, reward, self, "haq search", rescore)
        result.info.update({"float_accuracy": float_acc, "finetune_steps": self.finetune_steps})
        if "rescored" in result.info:
            result.info.update({"images": len(searched), "rescore_images": len(rescored),
                                "rescore_float_accuracy": rescore.reference()})
        return result

    def samples(self, size: int) -> tuple[list[int] | None, list[int] | None]:
        """The search split's images the search reward and the re-score use (None: the whole split; no re-score)."""
        first = min(self.images, size) if self.images is not None else (size // 2 if self.rescore_top else size)
        searched = list(range(first)) if first < size else None
        if not self.rescore_top:
            return searched, None
        rest = list(range(first, size if self.rescore_images is None else min(size, first + self.rescore_images)))
        if not rest:
            raise ArqbenchError(f"haq.rescore_top needs search images beyond the search's haq.images={self.images}: "
                                f"the search split has {size}")
        return list(range(first)), rest

    def reward(self, ctx: SearchContext, indices: list[int] | None):
        """``reward(policy) -> (value, record)`` on the search split's images ``indices`` (None: all), against the
        float model's accuracy on them (``reward.reference()``, measured once, on first use)."""
        float_acc = functools.cache(lambda: ctx.accuracy(ctx.model, indices))

        def reward(policy):
            acc = ctx.accuracy(ctx.candidate(policy, candidate_steps(self.finetune_steps, "haq.finetune_steps")), indices)
            return 0.1 * 100 * (acc - float_acc()), {"accuracy": acc}

        reward.reference = float_acc
        return reward

    def estimate(self, work) -> float:
        """The float model's accuracy, then per episode a candidate's short fine-tune and its accuracy; with
        re-scoring, the same on the re-score's images for the float model and the top candidates."""
        searched, rescored = self.samples(work.search_images)
        images = work.search_images if searched is None else len(searched)
        steps = candidate_steps(self.finetune_steps, "haq.finetune_steps")
        total = images + self.episodes * (images + work.finetune_forwards(steps))
        if rescored:
            total += len(rescored) + min(self.rescore_top, self.episodes) * (
                len(rescored) + work.finetune_forwards(steps))
        return total


@hookimpl
def register_search(register):
    register("haq", HAQ)
