"""Search ``hawq``: Hutchinson traces, the Omega sensitivities, the ILP, and a short run on digits."""

import itertools
import json
import math
import random
import tempfile
from pathlib import Path

import pulp
import pytest
import torch
from arqbench.baselines.hawq import CHOICES, Hawq, ilp_policy, tie_units
from arqbench.baselines.hessian import layer_traces
from conftest import TINY
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from arqbench import plugins
from arqbench.errors import ArqbenchError, InfeasibleBudget
from arqbench.quantization.layers import LayerInfo
from arqbench.quantization.policy import MAX_BITS

# --- Hutchinson ---------------------------------------------------------------------------------------


def test_hutchinson_matches_the_exact_trace():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    x, y = torch.randn(32, 5), torch.randint(0, 3, (32,))
    probes = 400
    estimates = layer_traces(model, ["0", "2"], [(x[:16], y[:16]), (x[16:], y[16:])], tol=0.0, max_iter=probes)
    for name in ("0", "2"):
        weight = model.get_submodule(name).weight.detach()

        def loss(w):
            return F.cross_entropy(torch.func.functional_call(model, {f"{name}.weight": w}, (x,)), y)

        hessian = torch.autograd.functional.hessian(loss, weight).reshape(weight.numel(), weight.numel()).double()
        exact = hessian.trace().item()
        # One Rademacher probe v^T H v has mean Tr(H) and variance 2 * (||H||_F^2 - sum_i H_ii^2) (the diagonal
        # terms v_i^2 H_ii are constant). The mean of `probes` independent probes has standard deviation
        # sqrt(variance / probes); allow 5 of them (a normal tail of 6e-7; the seeds are fixed anyway).
        variance = 2 * (hessian.pow(2).sum() - hessian.diagonal().pow(2).sum()).item()
        tolerance = 5 * math.sqrt(variance / probes)
        assert estimates[name]["iterations"] == probes
        assert tolerance < 0.25 * abs(exact)  # the check is not vacuous
        assert abs(estimates[name]["trace"] - exact) <= tolerance


def test_hutchinson_stops_at_the_tolerance_and_leaves_the_model_alone():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).train()
    model[0].weight.requires_grad_(False)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    loose = layer_traces(model, ["0"], [(x, y)], tol=0.5, max_iter=50)
    capped = layer_traces(model, ["0"], [(x, y)], tol=1e-12, max_iter=7)
    assert 2 <= loose["0"]["iterations"] < 50
    assert capped["0"]["iterations"] == 7
    assert model.training and not model[0].weight.requires_grad


# --- the ILP ------------------------------------------------------------------------------------------

BITOPS = plugins.create("cost_model", "bitops")


def toy_layers(count: int = 6) -> list[LayerInfo]:
    rng = random.Random(count)
    layers = []
    for i in range(count):
        c_in, c_out, size = rng.choice([4, 8, 16]), rng.choice([4, 8, 16]), rng.choice([4, 16, 64])
        layers.append(LayerInfo(i, f"l{i}", "conv", c_in, c_out, 3, 1, 1, c_in * c_out * 9, size,
                                size * c_in * c_out * 9))
    return layers


def toy_omega(layers, seed: int) -> dict:
    """Random sensitivities that fall with the bit-width, like ||Q_b(W) - W||^2 (about 4^-b)."""
    rng = random.Random(seed)
    return {l.name: {b: rng.uniform(0.1, 10) * 4.0 ** -b * rng.uniform(0.8, 1.2) for b in CHOICES} for l in layers}


def fraction(layers):
    full = BITOPS.cost(layers, {l.name: (32, 32) for l in layers})
    return lambda policy: BITOPS.cost(layers, policy) / full


def brute_force(layers, fixed, groups, omega, cost_fraction, budget, search_activations):
    units, held = tie_units(layers, fixed, groups)
    best = None
    for combo in itertools.product(CHOICES, repeat=len(units)):
        policy = {name: (MAX_BITS, MAX_BITS) for name in held}
        for unit, b in zip(units, combo):
            policy.update({n: (b, b if search_activations else MAX_BITS) for n in unit})
        if cost_fraction(policy) <= budget:
            value = sum(omega[n][b] for unit, b in zip(units, combo) for n in unit)
            if best is None or value < best[1]:
                best = (policy, value)
    return best


@pytest.mark.parametrize("seed, search_activations", [(0, False), (1, False), (2, False), (3, True), (4, True)])
def test_ilp_equals_brute_force(seed, search_activations):
    layers = toy_layers(6)
    cost_fraction = fraction(layers)
    fixed, groups = {"l0", "l5"}, [["l2", "l3"]]
    omega = toy_omega(layers, seed)
    cheapest = cost_fraction({l.name: (8, 8) if l.name in fixed else (2, 2 if search_activations else 8)
                              for l in layers})
    budget = random.Random(seed).uniform(cheapest, cost_fraction({l.name: (8, 8) for l in layers}))
    policy, objective = ilp_policy(layers, fixed, groups, omega, cost_fraction, budget, search_activations)
    expected, value = brute_force(layers, fixed, groups, omega, cost_fraction, budget, search_activations)
    assert policy == expected
    assert objective == pytest.approx(value)


@settings(max_examples=20, deadline=None)
@given(budget=st.floats(0.008, 0.3), seed=st.integers(0, 1000), search_activations=st.booleans())
def test_policy_meets_the_budget_and_the_ties(budget, seed, search_activations):
    layers = toy_layers(8)
    cost_fraction = fraction(layers)
    fixed, groups = {"l0", "l7"}, [["l1", "l4"], ["l4", "l6"]]  # overlapping groups merge into one
    try:
        policy, _ = ilp_policy(layers, fixed, groups, toy_omega(layers, seed), cost_fraction, budget,
                               search_activations)
    except InfeasibleBudget:
        cheapest = {l.name: (8, 8) if l.name in fixed else (2, 2 if search_activations else 8) for l in layers}
        assert cost_fraction(cheapest) > budget
        return
    assert cost_fraction(policy) <= budget
    assert policy["l1"] == policy["l4"] == policy["l6"]
    assert policy["l0"] == policy["l7"] == (8, 8)
    assert all(a == (w if search_activations else 8) for name, (w, a) in policy.items() if name not in fixed)


def test_a_tie_with_a_fixed_layer_holds_the_group_at_8_bits():
    layers = toy_layers(5)
    policy, _ = ilp_policy(layers, {"l0"}, [["l0", "l2"]], toy_omega(layers, 0), fraction(layers), 0.05, False)
    assert policy["l0"] == policy["l2"] == (8, 8)


def test_the_ilp_solver_keeps_its_files_under_the_cache_home_and_leaves_the_temp_directory_empty(tmp_path,
                                                                                                  monkeypatch):
    empty, home = tmp_path / "tmp", tmp_path / "home"
    empty.mkdir()
    monkeypatch.setenv("TMPDIR", str(empty))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    monkeypatch.setenv("ARQBENCH_HOME", str(home))
    folders = []
    solve = pulp.PULP_CBC_CMD.actualSolve

    def watched(self, *args, **kwargs):  # where CBC's model and solution files go
        folders.append(Path(self.tmpDir))
        return solve(self, *args, **kwargs)

    monkeypatch.setattr(pulp.PULP_CBC_CMD, "actualSolve", watched)
    layers = toy_layers(5)
    policy, _ = ilp_policy(layers, {"l0"}, [], toy_omega(layers, 0), fraction(layers), 0.05, False)
    assert policy and folders and all(folder.parent == home / "scratch" for folder in folders)
    assert list(empty.iterdir()) == [] and list((home / "scratch").iterdir()) == []


def test_infeasible_budget_is_one_clear_line():
    layers = toy_layers(5)
    with pytest.raises(InfeasibleBudget, match="cannot be met.*--search-activations") as error:
        ilp_policy(layers, {"l0", "l4"}, [], toy_omega(layers, 0), fraction(layers), 0.001, False)
    assert "\n" not in str(error.value)


def test_a_non_additive_cost_model_is_refused():
    layers = toy_layers(5)

    def widest(policy):  # the cost of the widest layer: not a sum over layers
        return max(policy[l.name][0] for l in layers) / 32

    with pytest.raises(ArqbenchError, match="additive"):
        ilp_policy(layers, set(), [], toy_omega(layers, 0), widest, 0.2, False)


def test_options_are_checked():
    with pytest.raises(ArqbenchError, match="hawq.batches"):
        Hawq(batches=0)
    with pytest.raises(ArqbenchError, match="hawq.tie"):
        Hawq(tie="sometimes")
    with pytest.raises(ArqbenchError, match="not a quantizable layer"):
        tie_units(toy_layers(3), set(), [["l0", "nope"]])


# --- a short run on digits ----------------------------------------------------------------------------


def test_hawq_run_on_digits_records_traces(cli, tmp_path, quick_digits_checkpoint):
    options = ["--option", "hawq.batches=1", "--option", "hawq.batch_size=64", "--option", "hawq.max_iter=5"]
    code, out, err = cli("run", "--methods", "hawq", "--sigma", "0.25", "--budget", "0.025", "--out", tmp_path,
                         "--checkpoint", quick_digits_checkpoint, *options, *TINY)
    assert code == 0, err
    (path,) = tmp_path.rglob("hawq*.json")
    result = json.loads(path.read_text())
    assert result["status"] == "ok" and result["cost"]["within_budget"]
    info, policy = result["search"], result["policy"]
    assert set(info["traces"]) == set(policy) and all(t > 0 for t in info["traces"].values())
    assert all(2 <= n <= 5 for n in info["trace_iterations"].values())
    assert info["objective"] > 0 and set(info["omega"]["net.fc"]) == {str(b) for b in CHOICES}
    assert policy["net.block2.conv1"] == policy["net.block2.shortcut.0"]
    assert policy["net.stem"] == policy["net.fc"] == [8, 8]
    assert not info["trace_cached"]

    code, _, err = cli("run", "--methods", "hawq", "--sigma", "0.25", "--budget", "0.03", "--out", tmp_path,
                       "--checkpoint", quick_digits_checkpoint, *options, "--option", "hawq.tie=none", *TINY)
    assert code == 1  # untied, its policy breaks digits' tie: refused by the core before fine-tuning
    (again,) = tmp_path.rglob("budget0.03*/hawq*.json")
    assert json.loads(again.read_text())["error"].startswith(
        "search 'hawq' (plugin 'hawq') broke the contract: tied layers net.block2.conv1 ")
    code, _, err = cli("run", "--methods", "hawq", "--sigma", "0.25", "--budget", "0.03", "--out", tmp_path,
                       "--checkpoint", quick_digits_checkpoint, *options, *TINY)
    assert code == 0, err
    info = json.loads(again.read_text())["search"]
    assert info["trace_cached"] and info["ties"] == [["net.block2.conv1", "net.block2.shortcut.0"]]
