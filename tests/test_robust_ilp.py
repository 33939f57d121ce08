"""Search ``robust-ilp``: against brute force on a 4-layer model, the budget, float layers, the cache, digits."""

import copy
import itertools
import json
import random

import pytest
import torch
from arqbench.bundled.searches.robust_ilp import RobustILP
from conftest import TINY
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import Subset, TensorDataset

from arqbench import plugins
from arqbench.errors import ArqbenchError, InfeasibleBudget
from arqbench.models.benchmark import Benchmark, TrainRecipe
from arqbench.models.data import ProtocolData
from arqbench.pipeline.config import resolve
from arqbench.quantization.layers import profile_layers
from arqbench.search.context import SearchContext
from arqbench.search.ilp import CHOICES, ilp_policy
from arqbench.search.estimate import Workload
from arqbench.search.sensitivity import points as sensitivity_points
from arqbench.search.sensitivity import policy_loss
from arqbench.smoothing.core import SmoothingConfig

SIGMA = 0.5


class Toy(Benchmark):
    def build_model(self):
        return nn.Sequential(nn.Linear(6, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(),
                             nn.Linear(24, 3))


TOY = Toy(name="toy4", num_classes=3, input_shape=(6,), radii=(0.25, 0.5), recipe=TrainRecipe(epochs=1),
          finetune=TrainRecipe(epochs=1))


@pytest.fixture(scope="module")
def toy():
    """A noise-trained 4-layer classifier of three Gaussian clusters, and its protocol data."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 6, generator=gen)
    labels = torch.randint(0, 3, (420,), generator=gen)
    x = centres[labels] + 0.6 * torch.randn(420, 6, generator=gen)
    torch.manual_seed(0)
    model = TOY.build_model()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        noisy = x[:300] + SIGMA * torch.randn(300, 6, generator=gen)
        loss = nn.functional.cross_entropy(model(noisy), labels[:300])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    test = TensorDataset(x[360:], labels[360:])
    data = ProtocolData(finetune=TensorDataset(x[:300], labels[:300]),
                        search=TensorDataset(x[300:360], labels[300:360]), test=test, certify=Subset(test, range(10)))
    return model, data


def context(toy, budget, search_activations=False, quantizer=None, fixed=(), model_key="toy4-v1"):
    """The search context of the toy model; ``model_key`` names it in caches (a test double of a quantizer
    needs a name of its own)."""
    model, data = toy
    protocol = resolve(TOY, {"n0": 20, "n": 200, "alpha": 0.01, "batch_size": 400,
                             "search_activations": search_activations, "options": {"irs": {"n_p": 0.5}}})
    return SearchContext(
        model=model, layers=profile_layers(model, TOY.input_shape), benchmark=TOY, data=data,
        quantizer=quantizer or protocol.create("quantizer", "linear"),
        cost_model=plugins.create("cost_model", "bitops"), budget=budget, sigma=SIGMA, seed=0,
        device=torch.device("cpu"), fixed=set(fixed), search_activations=search_activations,
        smoothing=SmoothingConfig(sigma=SIGMA, n0=20, n=200, alpha=0.01, batch_size=400, seed=0),
        protocol=protocol, reference_key={"benchmark": "toy4", "sigma": SIGMA, "model": model_key})


def summed(policy, info) -> float:
    """The objective of ``policy`` from a result's recorded sensitivities."""
    table = {layer: {tuple(map(int, key.split("/"))): v for key, v in by.items()}
             for layer, by in info["sensitivity"].items()}
    return policy_loss(policy, table)


def search(ctx, **options):
    return RobustILP(images=20, **options).search(ctx)


def brute_force(ctx, table):
    """Every weight policy of the free layers (activations 8), the least summed sensitivity within budget,
    then (ties) the most bits: all optima, and the optimal value."""
    names = [l.name for l in ctx.layers if l.name not in ctx.fixed]
    scored = []
    for bits in itertools.product(CHOICES, repeat=len(names)):
        policy = {l.name: (8, 8) for l in ctx.layers} | {n: (b, 8) for n, b in zip(names, bits)}
        if ctx.cost_fraction(policy) <= ctx.budget:
            scored.append((round(sum(table[n][f"{b}/8"] for n, b in zip(names, bits)), 12), -sum(bits), policy))
    best = min(s[:2] for s in scored)
    return [p for v, t, p in scored if (v, t) == best], best[0]


@pytest.mark.parametrize("budget", [0.02, 0.03, 0.045])
def test_it_picks_the_brute_force_optimum_of_its_sensitivities(toy, budget):
    ctx = context(toy, budget)
    found = search(ctx)
    table = found.info["sensitivity"]
    assert set(table) == {"0", "2", "4", "6"} and all(len(by) == 7 for by in table.values())
    assert any(v > 0 for by in table.values() for v in by.values())  # a real profile, not all zeros
    optima, value = brute_force(ctx, table)
    assert found.policy in optima
    assert found.info["objective"] == pytest.approx(value, abs=1e-12)
    assert RobustILP(images=20).objective(ctx, found.policy) == pytest.approx(value, abs=1e-12)
    assert found.info["cost_fraction"] <= budget


@settings(max_examples=15, deadline=None)
@given(budget=st.floats(0.01, 0.08), search_activations=st.booleans())
def test_the_budget_is_always_met(toy, budget, search_activations):
    ctx = context(toy, budget, search_activations)
    try:
        found = search(ctx, metric="disagreement")
    except InfeasibleBudget:
        cheapest = {l.name: (2, 2 if search_activations else 8) for l in ctx.layers}
        assert ctx.cost_fraction(cheapest) > budget
        return
    assert ctx.cost_fraction(found.policy) <= budget
    assert all(2 <= w <= 8 and 2 <= a <= 8 for w, a in found.policy.values())
    if not search_activations:
        assert all(a == 8 for _, a in found.policy.values())
    assert summed(found.policy, found.info) == pytest.approx(found.info["objective"], abs=1e-12)


def test_a_layer_left_at_float_has_zero_sensitivity(toy):
    """A quantizer that leaves every layer float makes every sensitivity exactly 0; the ILP then spends the
    budget on bits (the most bits that fit)."""

    class Float:
        def quantize(self, model, policy, calibration):
            return copy.deepcopy(model)

    for metric in ("acr", "disagreement"):
        ctx = context(toy, 0.03, quantizer=Float(), model_key="toy4-float-copy")
        found = search(ctx, metric=metric)
        assert all(v == 0 for by in found.info["sensitivity"].values() for v in by.values())
        assert found.info["objective"] == 0
        names = [l.name for l in ctx.layers]
        most = max(sum(bits) for bits in itertools.product(CHOICES, repeat=4)
                   if ctx.cost_fraction({n: (b, 8) for n, b in zip(names, bits)}) <= 0.03)
        assert sum(w for w, _ in found.policy.values()) == most


def test_the_profile_is_cached_and_reused(toy, capsys):
    search(context(toy, 0.03), metric="acr")
    calls, real = [], plugins.create("quantizer", "linear")

    class Counting:
        def quantize(self, model, policy, calibration):
            calls.append(policy)
            return real.quantize(model, policy, calibration)

    ctx = context(toy, 0.025, quantizer=Counting())  # the same quantizer, counted: the same cache entry
    capsys.readouterr()
    again = search(ctx, metric="acr")
    assert calls == [] and again.info["profile_cache"]["computed"] == 0 and again.info["profile_cache"]["reused"] == 28
    assert "reused all 28 points" in capsys.readouterr().err


@pytest.mark.parametrize("activations", [False, True])
def test_the_dry_run_estimate_bounds_the_paired_profile_from_above(toy, activations):
    """The estimate counts every point measured (none skipped): at least the profile's forwards, and for the
    certified profile (here with as many samples per point) it is more."""
    ctx = context(toy, 0.05, search_activations=activations, model_key=f"toy4-estimate-{activations}")
    work = Workload(ctx.layers, TOY, ctx.protocol, ctx.smoothing, 0.05, search_images=60, finetune_images=300)
    paired, certified = RobustILP(images=20, profile="paired"), RobustILP(images=20, profile="certified")
    (estimate,) = paired.estimate(work).shared.values()
    (certified_estimate,) = certified.estimate(work).shared.values()
    found = paired.search(ctx)
    points = 2 * len(sensitivity_points(activations))  # the first and last layer stay 8/8 (keep_ends)
    assert estimate == 20 * (100 + points * 100) >= found.info["profile_cache"]["forwards"]
    assert found.info["profile_cache"]["forwards"] > 20 * 100  # f, and at least one point
    assert certified_estimate > estimate  # here S = N_p; it pays f's certification and n0


def test_fixed_and_tied_layers(toy):
    ctx = context(toy, 0.05, fixed={"0"})
    found = search(ctx, metric="disagreement", tie=[["2", "4"]])
    assert found.policy["0"] == (8, 8) and found.policy["2"] == found.policy["4"]
    assert set(found.info["sensitivity"]) == {"2", "4", "6"}  # the fixed layer is not measured
    assert found.info["ties"] == [["2", "4"]]


def test_options_are_checked():
    for options, message in (({"metric": "loss"}, "robust-ilp.metric"), ({"images": 0}, "robust-ilp.images"),
                             ({"n": -1}, "robust-ilp.n"),
                             ({"tie": "always"}, "robust-ilp.tie"), ({"certifier": "nope"}, "unknown certifier"),
                             ({"profile": "exact"}, "robust-ilp.profile"), ({"samples": 0}, "robust-ilp.samples")):
        with pytest.raises(ArqbenchError, match=message):
            RobustILP(**options)


def test_the_ilp_over_weight_and_activation_pairs_equals_brute_force():
    """The core ILP with explicit (w, a) choices and the bits tie-break, on 3 layers (49^3 policies)."""
    from test_hawq import fraction, toy_layers

    layers = toy_layers(3)
    cost_fraction = fraction(layers)
    rng = random.Random(7)
    pairs = [(w, a) for w in CHOICES for a in CHOICES]
    omega = {l.name: {p: round(rng.uniform(0, 1) * 4.0 ** -min(p), 3) for p in pairs} for l in layers}
    omega["l1"] = {p: 0.0 for p in pairs}  # a layer whose every choice ties
    budget = 0.03
    policy, value = ilp_policy(layers, set(), [], omega, cost_fraction, budget, True, prefer_bits=True)
    best = min((round(sum(omega[n][p] for n, p in zip(["l0", "l1", "l2"], combo)), 12), -sum(map(sum, combo)))
               for combo in itertools.product(pairs, repeat=3)
               if cost_fraction(dict(zip(["l0", "l1", "l2"], combo))) <= budget)
    assert cost_fraction(policy) <= budget
    assert value == pytest.approx(best[0]) and sum(map(sum, policy.values())) == -best[1]


def test_robust_ilp_on_digits_with_activations(cli, tmp_path, quick_digits_checkpoint):
    code, _, err = cli("run", "--methods", "robust-ilp", "--sigma", "0.25", "--budget", "0.015", "--search-activations",
                       "--option", "robust-ilp.images=3", "--out", tmp_path, "--checkpoint", quick_digits_checkpoint,
                       *TINY)
    assert code == 0, err
    record = json.loads((tmp_path / "digits/sigma0.25/budget0.015/robust-ilp-seed0.json").read_text())
    assert record["status"] == "ok" and record["cost"]["fraction"] <= 0.015
    info, policy = record["search"], record["policy"]
    assert policy["net.stem"] == policy["net.fc"] == [8, 8]
    assert policy["net.block2.conv1"] == policy["net.block2.shortcut.0"]
    cache = info["profile_cache"]
    # an earlier test of the session may have cached the weights' points: they are reused, not measured again
    assert len(info["profile"]) == 5 * 13 and cache["computed"] + cache["skipped"] + cache["reused"] == 65
    assert set(info["sensitivity"]["net.block1.conv1"]) == {f"{w}/{a}" for w in CHOICES for a in CHOICES}
    assert summed({k: tuple(v) for k, v in policy.items()}, info) == pytest.approx(info["objective"])
    assert "robust-ilp" in plugins.names("search")
