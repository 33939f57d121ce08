"""HAQ's DDPG agent (stable-baselines3) driving ``BitAllocationEnv``; the reward is the caller's.

What HAQ changes on top of plain DDPG, each in one small override:
- warm-up episodes of uniform random actions, then truncated-normal exploration around the
  actor's action with a width decaying per episode;
- every transition of an episode is credited with the episode's final reward, and sampled
  rewards have a moving-average baseline subtracted (``EpisodeCreditBuffer``);
- separate actor and critic learning rates; gamma 1, tau 0.01, batch 64, 300-300 networks.

What ships (``rl_search``): the search's reward is a noisy estimate, and the argmax of many noisy scores is
the luckiest candidate, not the best one. With ``rescore_top`` = k > 0 the k distinct policies with the best
search reward are scored again by the search's ``rescore`` callable, and the best re-score ships. The contract
of ``rescore(policy) -> (value, record)``: the search's own reward function on a *larger, independent* sample
(other search images, more noise samples, a fresh noise seed), with the same candidate fine-tune, so its
values are comparable among the re-scored candidates (not with the search rewards). k = 0 (the default) ships
the argmax of the search reward, and nothing is re-scored.
"""

import time
from dataclasses import dataclass, fields
from typing import Callable

import numpy as np
from scipy.stats import truncnorm
from stable_baselines3 import DDPG
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger

from arqbench.errors import ArqbenchError
from arqbench.search.bit_env import BitAllocationEnv
from arqbench.search.context import SearchContext, SearchResult


FINAL = "final"  # a search's ``finetune_steps``: the whole final fine-tune, so the candidate is the shipped model


def candidate_steps(value, option: str) -> int | None:
    """A search's ``finetune_steps`` option as ``SearchContext.candidate`` takes it: SGD steps (an int >= 0), or
    ``"final"`` -> None (the protocol's whole final fine-tune: the candidate scored is the model that ships)."""
    if value == FINAL:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ArqbenchError(f"{option} is a number of SGD steps (0 or more) or 'final' (the whole final fine-tune, "
                            f"the candidate is the shipped model), got {value!r}")
    return value


@dataclass(frozen=True)
class AgentSettings:
    episodes: int = 600
    warmup: int = 20  # episodes of uniform random actions before the actor acts
    noise: float = 0.5  # initial width of the truncated-normal exploration
    noise_decay: float = 0.99  # per episode after warm-up
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    tau: float = 0.01
    batch_size: int = 64
    hidden: int = 300
    memory_per_step: int = 128  # replay memory = 128 x steps per episode, as HAQ
    baseline_alpha: float = 0.5  # moving-average reward baseline: b += alpha * (batch mean - b)
    rescore_top: int = 0  # re-score the k best distinct candidates on a larger sample, ship the best (0: off)

    def __post_init__(self):
        for name in ("episodes", "batch_size", "hidden", "memory_per_step"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("warmup", "rescore_top"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {getattr(self, name)!r}")

    def agent_settings(self) -> dict:
        """The agent's settings alone (a search plugin subclassing this adds its own options)."""
        return {f.name: getattr(self, f.name) for f in fields(AgentSettings)}


class EpisodeCreditBuffer(ReplayBuffer):
    """A replay buffer that gives each transition its episode's final reward and subtracts a moving baseline."""

    def __init__(self, *args, baseline_alpha: float = 0.5, **kwargs):
        super().__init__(*args, **kwargs)
        self.baseline_alpha = baseline_alpha
        self.baseline: float | None = None
        self._episode_length = 0

    def add(self, obs, next_obs, action, reward, done, infos):
        super().add(obs, next_obs, action, reward, done, infos)
        self._episode_length += 1
        if done[0]:
            positions = [(self.pos - 1 - k) % self.buffer_size for k in range(self._episode_length)]
            self.rewards[positions, 0] = reward[0]
            self._episode_length = 0

    def sample(self, batch_size, env=None):
        batch = super().sample(batch_size, env)
        mean = batch.rewards.mean().item()
        self.baseline = mean if self.baseline is None else self.baseline + self.baseline_alpha * (mean - self.baseline)
        return batch._replace(rewards=batch.rewards - self.baseline)


class HAQAgent(DDPG):
    def __init__(self, env: BitAllocationEnv, settings: AgentSettings, seed: int):
        steps = len(env.steps)
        self.settings = settings
        self.rng = np.random.default_rng(seed)
        super().__init__(
            "MlpPolicy", env, learning_rate=settings.critic_lr,
            buffer_size=settings.memory_per_step * steps, learning_starts=settings.warmup * steps,
            batch_size=settings.batch_size, tau=settings.tau, gamma=1.0, train_freq=(1, "episode"),
            gradient_steps=-1, replay_buffer_class=EpisodeCreditBuffer,
            replay_buffer_kwargs={"baseline_alpha": settings.baseline_alpha},
            policy_kwargs={"net_arch": {"pi": [settings.hidden] * 2, "qf": [settings.hidden] * 2}},
            seed=seed, device="cpu", verbose=0,
        )
        # SB3's default logger makes an empty SB3-<time> folder in the temp directory on every learn(); this
        # one keeps nothing (the search records its own history) and writes nowhere.
        self.set_logger(Logger(folder=None, output_formats=[]))

    def _update_learning_rate(self, optimizers):
        for optimizer, lr in zip(optimizers, (self.settings.actor_lr, self.settings.critic_lr)):
            for group in optimizer.param_groups:
                group["lr"] = lr

    def _sample_action(self, learning_starts, action_noise=None, n_envs=1):
        if self.num_timesteps < learning_starts:
            action = self.rng.uniform(0.0, 1.0, size=(n_envs, 1))
        else:
            mu, _ = self.predict(self._last_obs, deterministic=True)
            width = self.settings.noise * self.settings.noise_decay ** max(self._episode_num - self.settings.warmup, 0)
            action = truncnorm.rvs(-mu / width, (1 - mu) / width, loc=mu, scale=width, random_state=self.rng)
            action = np.clip(np.asarray(action, dtype=np.float32).reshape(n_envs, 1), 0.0, 1.0)
        return action.astype(np.float32), self.policy.scale_action(action).astype(np.float32)


class _EpisodeProgress(BaseCallback):
    def __init__(self, advance):
        super().__init__()
        self.advance = advance

    def _on_step(self) -> bool:
        if self.locals["dones"][0]:
            self.advance()
        return True


def top_distinct(history: list[dict], k: int) -> list[dict]:
    """The first-scored records of the ``k`` distinct policies with the highest search reward (ties: the
    earlier episode first, as the argmax picks)."""
    scored = [record for record in history if not record.get("revisit")]
    return sorted(scored, key=lambda record: -record["reward"])[:k]


def rescore_top(history: list[dict], k: int, rescore: Callable) -> list[dict]:
    """Each of the top ``k`` candidates (``top_distinct``) with both its scores: ``reward`` (the search's) and
    ``rescore`` (``rescore``'s value, its record under ``rescore_record``), and the seconds its re-score took
    (``rescore_s``); ``shipped`` marks the best re-score (ties: the better search reward)."""
    rescored = []
    for record in top_distinct(history, k):
        start = time.perf_counter()
        value, extra = rescore({name: tuple(bits) for name, bits in record["policy"].items()})
        rescored.append({"episode": record["episode"], "policy": record["policy"], "cost": record["cost"],
                         "reward": record["reward"], "rescore": float(value), "rescore_record": extra,
                         "rescore_s": time.perf_counter() - start, "shipped": False})
    if rescored:
        max(rescored, key=lambda r: r["rescore"])["shipped"] = True
    return rescored


def rl_search(ctx: SearchContext, reward, settings: AgentSettings, description: str = "search",
              rescore: Callable | None = None) -> SearchResult:
    """Run ``settings.episodes`` episodes; the result is the best-rewarded (within-budget) policy seen, or with
    ``settings.rescore_top`` > 0 the best re-scored by ``rescore`` among the top candidates (module docstring);
    ``info["rescored"]`` then lists them with both scores."""
    if settings.rescore_top and rescore is None:
        raise ArqbenchError("rescore_top needs a search that defines how to re-score a candidate; this one does not")
    env = BitAllocationEnv(ctx.layers, ctx.fixed, ctx.search_activations, ctx.within_budget, ctx.cost_fraction, reward)
    if not env.steps:  # every layer is fixed: nothing to search
        policy = ctx.within_budget(env.policy())
        return SearchResult(policy, {"episodes": 0, "history": []})
    agent = HAQAgent(env, settings, ctx.seed)
    with ctx.progress(f"{description}: episodes", settings.episodes) as advance:
        agent.learn(total_timesteps=settings.episodes * len(env.steps), callback=_EpisodeProgress(advance))
    best = max(env.history, key=lambda record: record["reward"])
    extra = {}
    if settings.rescore_top:
        rescored = rescore_top(env.history, settings.rescore_top, rescore)
        shipped = next(r for r in rescored if r["shipped"])
        best = next(record for record in env.history if record["episode"] == shipped["episode"])
        extra = {"rescored": rescored, "search_best_episode": rescored[0]["episode"],
                 "rescore_s": sum(r["rescore_s"] for r in rescored)}
    policy = {name: (bits[0], bits[1]) for name, bits in best["policy"].items()}
    distinct = sum(not record["revisit"] for record in env.history)  # how much the agent explored
    return SearchResult(policy, {"episodes": len(env.history), "distinct_candidates": distinct,
                                 "best_episode": best["episode"],
                                 "best_reward": best["reward"], "agent": settings.agent_settings(),
                                 **extra, "history": env.history})
