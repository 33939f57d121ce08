"""Layer-by-layer bit assignment as a gymnasium environment (HAQ, Wang et al. 2019).

One step per free layer (two when activation bits are searched: weights, then activations).
The observation is that layer's row of ten min-max-normalised features; the action a in
[0, 1] becomes bits = round(a * (max - min + 1) + min - 0.5). After the last step the
policy is pushed under the budget by the action wall and scored by a reward callable:
the only part a search method swaps. The reward must be a deterministic function of the
policy (fixed calibration, seeds and noise), so a policy the agent revisits is scored once.
"""

from typing import Callable

import gymnasium as gym
import numpy as np

from arqbench.quantization.layers import LayerInfo
from arqbench.quantization.policy import MAX_BITS, MIN_BITS, Policy

FEATURES = ("index", "in_channels", "out_channels", "stride", "kernel", "params", "in_size", "depthwise",
            "weight_action", "previous_action")


def action_to_bits(action: float, low: int = MIN_BITS, high: int = MAX_BITS) -> int:
    """HAQ's mapping of a continuous action in [0, 1] onto the integer bits [low, high]."""
    bits = int(np.round(float(action) * (high - low + 1) + low - 0.5))
    return min(max(bits, low), high)


class BitAllocationEnv(gym.Env):
    """Episodes assign bits to the free layers; ``reward(policy) -> (reward, record)`` scores the walled policy.

    ``history`` keeps one record per episode: the policy, its cost and whatever the reward returned.
    """

    metadata: dict = {}

    def __init__(self, layers: list[LayerInfo], fixed: set[str], search_activations: bool,
                 within_budget: Callable[[Policy], Policy], cost_fraction: Callable[[Policy], float],
                 reward: Callable[[Policy], tuple[float, dict]]):
        super().__init__()
        self.layers = layers
        self.fixed = fixed
        self.within_budget, self.cost_fraction, self.reward = within_budget, cost_fraction, reward
        free = [l for l in layers if l.name not in fixed]
        self.steps = [(l, which) for l in free for which in (("w", "a") if search_activations else ("w",))]
        self.table = self._features()
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(len(FEATURES),), dtype=np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self.history: list[dict] = []
        self._scores: dict[tuple, tuple[float, dict]] = {}
        self._t, self._bits, self._previous = 0, {}, 1.0

    def _features(self) -> np.ndarray:
        rows = [[l.index, l.in_channels, l.out_channels, l.stride, l.kernel_size, l.params, l.in_size,
                 float(l.depthwise), float(which == "w"), 0.0] for l, which in self.steps]
        table = np.asarray(rows, dtype=np.float64)
        low, span = table.min(axis=0), np.ptp(table, axis=0)
        normalised = np.where(span > 0, (table - low) / np.where(span > 0, span, 1), 0.0)
        normalised[:, FEATURES.index("weight_action")] = table[:, FEATURES.index("weight_action")]
        return normalised.astype(np.float32)

    def _observation(self) -> np.ndarray:
        row = self.table[min(self._t, len(self.steps) - 1)].copy()
        row[-1] = self._previous
        return row

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t, self._bits, self._previous = 0, {}, 1.0
        return self._observation(), {}

    def policy(self) -> Policy:
        """The bits chosen so far: fixed layers 8/8, unsearched activations 8."""
        return {l.name: (MAX_BITS, MAX_BITS) if l.name in self.fixed else
                (self._bits.get((l.name, "w"), MAX_BITS), self._bits.get((l.name, "a"), MAX_BITS))
                for l in self.layers}

    def step(self, action):
        value = float(np.clip(np.asarray(action).reshape(-1)[0], 0.0, 1.0))
        layer, which = self.steps[self._t]
        self._bits[(layer.name, which)] = action_to_bits(value)
        self._previous = value
        self._t += 1
        if self._t < len(self.steps):
            return self._observation(), 0.0, False, False, {}
        policy = self.within_budget(self.policy())
        key = tuple(sorted(policy.items()))
        revisit = key in self._scores
        if not revisit:
            self._scores[key] = self.reward(policy)
        reward, record = self._scores[key]
        self.history.append({"episode": len(self.history), "policy": {k: list(v) for k, v in policy.items()},
                             "cost": self.cost_fraction(policy), "reward": float(reward), "revisit": revisit,
                             **record})
        return self._observation(), float(reward), True, False, {"policy": policy}
