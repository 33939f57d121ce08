"""HAQ's environment and agent (shared with ARQ), and the haq search end to end."""

import json
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import TINY
from test_quantization import HandNet

import torch

from arqbench import plugins
from arqbench.errors import ArqbenchError
from arqbench.pipeline.results import read
from arqbench.quantization import policy as policies
from arqbench.quantization.layers import profile_layers
from arqbench.search.context import quietly
from arqbench.search.agent import AgentSettings, EpisodeCreditBuffer, candidate_steps, rl_search
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
    record = read(tmp_path / "digits/sigma0.25/budget0.03/haq-seed0.json")
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


def true_value(policy):
    """A fake candidate's true quality: distinct for distinct policies."""
    return sum(w * np.sqrt(2 + i) + a * np.sqrt(11 + i) for i, (w, a) in enumerate(policy[k] for k in sorted(policy)))


def noisy(policy):
    """The search reward: the true value plus a large noise fixed per policy (a revisit scores the same)."""
    seed = zlib.crc32(json.dumps(sorted((k, list(v)) for k, v in policy.items())).encode())
    return true_value(policy) + 20 * np.random.default_rng(seed).normal(), {}


def test_top_distinct_skips_revisits_and_breaks_ties_by_episode():
    from arqbench.search.agent import top_distinct

    history = [{"episode": 0, "policy": {"a": [2, 8]}, "reward": 1.0},
               {"episode": 1, "policy": {"a": [3, 8]}, "reward": 3.0},
               {"episode": 2, "policy": {"a": [3, 8]}, "reward": 3.0, "revisit": True},
               {"episode": 3, "policy": {"a": [4, 8]}, "reward": 1.0},
               {"episode": 4, "policy": {"a": [5, 8]}, "reward": 2.0}]
    assert [r["episode"] for r in top_distinct(history, 3)] == [1, 4, 0]
    assert [r["episode"] for r in top_distinct(history, 10)] == [1, 4, 0, 3]


def test_rescoring_ships_the_best_rescore_of_exactly_the_top_k_distinct_candidates():
    calls = []

    def exact(policy):
        calls.append(policy)
        return true_value(policy), {"exact": True}

    settings = AgentSettings(episodes=30, warmup=30, rescore_top=5)
    result = rl_search(context(budget=1.0, search_activations=True, seed=1), noisy, settings, rescore=exact)
    history = result.info["history"]
    distinct = {}
    for h in history:
        distinct.setdefault(json.dumps(h["policy"], sort_keys=True), h)
    top = sorted(distinct.values(), key=lambda h: -h["reward"])[:5]
    # exactly the top 5 distinct policies, each re-scored once, in search-reward order
    assert [{k: list(v) for k, v in p.items()} for p in calls] == [h["policy"] for h in top]
    best_rescore = max(top, key=lambda h: true_value(h["policy"]))
    search_argmax = max(history, key=lambda h: h["reward"])
    assert best_rescore["episode"] != search_argmax["episode"]  # the noise fooled the argmax; the re-score did not
    assert result.policy == {k: tuple(v) for k, v in best_rescore["policy"].items()}
    assert result.info["best_episode"] == best_rescore["episode"]
    assert result.info["search_best_episode"] == search_argmax["episode"]
    rescored = result.info["rescored"]
    assert [r["episode"] for r in rescored] == [h["episode"] for h in top]
    for r, h in zip(rescored, top):
        assert r["policy"] == h["policy"] and r["cost"] == h["cost"] and r["reward"] == h["reward"]
        assert r["rescore"] == pytest.approx(true_value(h["policy"])) and r["rescore_record"] == {"exact": True}
    assert [r["shipped"] for r in rescored] == [h is best_rescore for h in top]


def test_without_rescoring_the_search_is_unchanged():
    """rescore_top = 0 never calls the re-score and ships the argmax; the episodes do not depend on k."""
    def never(policy):
        raise AssertionError("re-scored with rescore_top=0")

    ctx = context(budget=1.0, search_activations=True, seed=1)
    off = rl_search(ctx, noisy, AgentSettings(episodes=30, warmup=10, batch_size=8), rescore=never)
    plain = rl_search(ctx, noisy, AgentSettings(episodes=30, warmup=10, batch_size=8))
    on = rl_search(ctx, noisy, AgentSettings(episodes=30, warmup=10, batch_size=8, rescore_top=3),
                   rescore=lambda p: (true_value(p), {}))
    assert off.info == plain.info and off.policy == plain.policy
    assert "rescored" not in off.info
    assert off.info["history"] == on.info["history"]
    best = max(off.info["history"], key=lambda h: h["reward"])
    assert off.policy == {k: tuple(v) for k, v in best["policy"].items()}
    assert off.info["best_episode"] == best["episode"]


def test_rescoring_without_a_rescore_is_an_error():
    from arqbench.errors import ArqbenchError

    with pytest.raises(ArqbenchError, match="rescore_top"):
        rl_search(context(), synthetic_reward(None), AgentSettings(episodes=2, warmup=2, rescore_top=2))
    with pytest.raises(ValueError, match="rescore_top must be a non-negative integer"):
        AgentSettings(rescore_top=-1)


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


def test_arq_and_haq_record_their_rescored_candidates(cli, tmp_path):
    code, out, err = cli("run", "--methods", "arq,haq", "--sigma", "0.25", "--budget", "0.03", "--episodes", "4",
                         "--option", "arq.warmup=4", "--option", "haq.warmup=4", "--option", "arq.rescore_top=3",
                         "--option", "haq.rescore_top=3", "--option", "arq.images=4", "--option", "arq.n=100",
                         "--option", "arq.rescore_images=6", "--option", "arq.rescore_n=200",
                         "--option", "arq.finetune_steps=1", "--option", "haq.finetune_steps=1", "--out", tmp_path,
                         *TINY)
    assert code == 0, err
    for method in ("arq", "haq"):
        record = read(tmp_path / f"digits/sigma0.25/budget0.03/{method}-seed0.json")
        search = record["search"]
        distinct = [h for h in search["history"] if not h["revisit"]]
        rescored = search["rescored"]
        assert len(rescored) == min(3, len(distinct))
        assert [r["reward"] for r in rescored] == sorted((h["reward"] for h in distinct), reverse=True)[:len(rescored)]
        assert all({"episode", "policy", "cost", "reward", "rescore", "rescore_record"} <= set(r) for r in rescored)
        shipped = [r for r in rescored if r["shipped"]]
        assert len(shipped) == 1 and shipped[0]["rescore"] == max(r["rescore"] for r in rescored)
        assert record["policy"] == shipped[0]["policy"] and search["best_episode"] == shipped[0]["episode"]
    arq = json.loads((tmp_path / "digits/sigma0.25/budget0.03/arq-seed0.json").read_text())["search"]
    assert arq["rescore_certifier_stats"]["float_certified"] == 6  # the re-score's own float certification
    assert all("acr" in r["rescore_record"] for r in arq["rescored"])
    haq = json.loads((tmp_path / "digits/sigma0.25/budget0.03/haq-seed0.json").read_text())["search"]
    assert abs(haq["images"] - haq["rescore_images"]) <= 1  # no haq.images: the search split's two halves
    assert all("accuracy" in r["rescore_record"] for r in haq["rescored"])


def test_a_final_candidate_is_the_model_the_protocol_ships(quick_digits_checkpoint):
    """finetune_steps="final": the candidate a search scores is fine-tuned as the protocol fine-tunes the model it
    ships (same recipe, seed, epochs), so its weights are the shipped model's; a short one's are not."""
    from arqbench.pipeline.cell import CellRun
    from arqbench.pipeline.config import resolve
    from arqbench.pipeline.prepare import prepare
    from arqbench.pipeline.results import Cell

    cpu = torch.device("cpu")
    benchmark = plugins.create("benchmark", "digits")
    protocol = resolve(benchmark, {"finetune_epochs": 1, "search_activations": True})
    prepared = prepare(benchmark, 0.25, protocol, cpu, checkpoint=quick_digits_checkpoint)
    run = CellRun(Cell("digits", 0.25, 0.05, "haq", 0), prepared, protocol, cpu)
    ctx = run.context()
    policy = ctx.within_budget({layer.name: (4, 4) for layer in ctx.layers})
    shipped, _ = run.quantized_model(policy)
    final = ctx.candidate(policy, candidate_steps("final", "haq.finetune_steps"))
    short = ctx.candidate(policy, 2)
    same = [torch.equal(a, b) for a, b in zip(shipped.state_dict().values(), final.state_dict().values())]
    assert all(same) and len(same) > 10
    assert not all(torch.equal(a, b) for a, b in zip(shipped.state_dict().values(), short.state_dict().values()))
    assert plugins.create("search", "haq", finetune_steps="final").finetune_steps == "final"
    with pytest.raises(ArqbenchError, match="finetune_steps is a number of SGD steps .* or 'final'"):
        plugins.create("search", "arq", finetune_steps="all")
