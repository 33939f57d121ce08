"""HAQ's environment and agent (shared with ARQ), and the haq search end to end."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import TINY
from test_quantization import HandNet

from arqbench import plugins
from arqbench.quantization import policy as policies
from arqbench.quantization.layers import profile_layers
from arqbench.search.context import quietly
from arqbench.search.agent import AgentSettings, EpisodeCreditBuffer, rl_search
from arqbench.search.bit_env import FEATURES, BitAllocationEnv, action_to_bits

LAYERS = profile_layers(HandNet(), (3, 6, 6))
BITOPS = plugins.create("cost_model", "bitops")
FLOAT = BITOPS.cost(LAYERS, policies.float_policy(LAYERS))


def context(budget=0.1, search_activations=False, seed=0):
    fixed = policies.fixed_layers(LAYERS)
    fraction = lambda p: BITOPS.cost(LAYERS, p) / FLOAT  # noqa: E731
    return SimpleNamespace(
        layers=LAYERS, fixed=fixed, search_activations=search_activations, seed=seed, budget=budget,
        cost_fraction=fraction, progress=quietly,
        within_budget=lambda p: policies.fit_to_budget(p, LAYERS, fraction, budget, fixed, search_activations))


def test_action_to_bits_covers_every_bit_width_evenly():
    assert action_to_bits(0.0) == 2 and action_to_bits(1.0) == 8
    bits = [action_to_bits(a) for a in np.linspace(0, 1, 7001)]
    assert bits == sorted(bits)
    counts = np.bincount(bits)[2:]
    assert len(counts) == 7 and counts.min() > 0.9 * counts.max()  # each of 2..8 gets ~1/7 of [0, 1]


@pytest.mark.parametrize("search_activations", [False, True])
def test_states_are_normalised_and_episodes_step_each_free_layer(search_activations):
    ctx = context(search_activations=search_activations)
    env = BitAllocationEnv(ctx.layers, ctx.fixed, search_activations, ctx.within_budget, ctx.cost_fraction,
                           lambda p: (-ctx.cost_fraction(p), {}))
    rng = np.random.default_rng(0)
    for _ in range(5):
        obs, _ = env.reset()
        steps, done = 0, False
        while not done:
            assert obs.shape == (len(FEATURES),) and (obs >= 0).all() and (obs <= 1).all()
            obs, reward, done, _, info = env.step(rng.uniform(0, 1, size=1))
            steps += 1
        free = len(LAYERS) - len(ctx.fixed)
        assert steps == free * (2 if search_activations else 1)
        assert ctx.cost_fraction(info["policy"]) <= ctx.budget
    assert len(env.history) == 5


def test_every_transition_of_an_episode_gets_the_final_reward_and_a_baseline():
    import gymnasium as gym

    space = gym.spaces.Box(0, 1, (2,), dtype=np.float32)
    buffer = EpisodeCreditBuffer(16, space, gym.spaces.Box(-1, 1, (1,), dtype=np.float32), device="cpu")
    for t, done in enumerate([False, False, True, False, True]):
        reward = 5.0 if t == 2 else (-1.0 if t == 4 else 0.0)
        buffer.add(np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((1, 1)), np.array([reward]), np.array([done]), [{}])
    assert buffer.rewards[:5, 0].tolist() == [5.0, 5.0, 5.0, -1.0, -1.0]
    batch = buffer.sample(5)
    assert buffer.baseline == pytest.approx(batch.rewards.mean().item() + buffer.baseline)  # centred on its mean


def synthetic_reward(ctx):
    """Prefer more bits on the middle layers, fewer elsewhere: a cheap reward with a known optimum."""
    return lambda p: (float(p["dw"][0] - p["pw"][0]), {})


def test_a_seeded_search_is_reproducible_and_meets_the_budget():
    settings = AgentSettings(episodes=12, warmup=4, batch_size=8)
    a = rl_search(context(seed=3), synthetic_reward(None), settings)
    b = rl_search(context(seed=3), synthetic_reward(None), settings)
    c = rl_search(context(seed=4), synthetic_reward(None), settings)
    assert a.info["history"] == b.info["history"] and a.policy == b.policy
    assert a.info["history"] != c.info["history"]
    assert len(a.info["history"]) == 12
    assert all(record["cost"] <= 0.1 for record in a.info["history"])
    best = max(a.info["history"], key=lambda r: r["reward"])
    assert a.policy == {k: tuple(v) for k, v in best["policy"].items()}


def test_the_agent_learns_a_simple_reward():
    """With a reward that grows with one layer's bits, the actor's choices climb after warm-up."""
    settings = AgentSettings(episodes=80, warmup=10, batch_size=32)
    result = rl_search(context(budget=1.0, seed=0), lambda p: (float(p["dw"][0]), {}), settings)
    late = np.mean([r["policy"]["dw"][0] for r in result.info["history"][-20:]])
    assert late > 6.3  # uniform random actions average 5 bits (std of a 20-episode mean ~0.45)


def test_haq_search_on_digits_writes_a_within_budget_result(cli, tmp_path):
    code, out, err = cli("run", "--methods", "haq", "--sigma", "0.25", "--budget", "0.03", "--episodes", "4",
                         "--option", "haq.warmup=2", "--out", tmp_path, *TINY)
    assert code == 0, err
    record = json.loads((tmp_path / "digits/sigma0.25/budget0.03/haq-seed0.json").read_text())
    assert record["status"] == "ok" and record["cost"]["within_budget"]
    assert record["cost"]["fraction"] <= 0.03
    history = record["search"]["history"]
    assert len(history) == 4 and all({"policy", "cost", "reward", "accuracy"} <= set(h) for h in history)
    assert record["search"]["best_reward"] == max(h["reward"] for h in history)
    # every candidate was fine-tuned; whether one had to rerun with BatchNorm frozen is recorded, as for the model
    assert record["search"]["candidate_finetunes"] == 4 - sum(h.get("revisit", False) for h in history)
    assert record["search"]["frozen_batchnorm_finetunes"] == 0
    assert record["finetune"] == {"epochs": record["config"]["protocol"]["finetune_epochs"], "frozen_batchnorm": False}


def test_a_revisited_policy_is_scored_once():
    calls = []

    def reward(policy):
        calls.append(policy)
        return 0.0, {}

    ctx = context(budget=1.0)
    env = BitAllocationEnv(ctx.layers, ctx.fixed, False, ctx.within_budget, ctx.cost_fraction, reward)
    for _ in range(3):
        env.reset()
        done = False
        while not done:
            done = env.step(np.array([0.5]))[2]
    assert len(calls) == 1 and [h["revisit"] for h in env.history] == [False, True, True]


def test_a_search_reports_each_episode_through_the_context_and_prints_nothing_off_a_terminal(capsys):
    """``ctx.progress`` gets the number of episodes, then one advance per episode; the console's default
    hook (here off a terminal) prints nothing."""
    from contextlib import contextmanager

    from arqbench import console

    calls = []

    @contextmanager
    def recorder(description, total):
        calls.append((description, total))
        yield lambda: calls.append("advance")
        calls.append("closed")

    ctx = context(seed=1)
    ctx.progress = recorder
    settings = AgentSettings(episodes=5, warmup=2)
    rl_search(ctx, synthetic_reward(None), settings, "test search")
    assert calls == [("test search: episodes", 5), *["advance"] * 5, "closed"]
    ctx.progress = console.steps
    rl_search(ctx, synthetic_reward(None), settings, "test search")
    assert capsys.readouterr() == ("", "")
