"""benchmarks/discrimination.py: its random within-budget policies, and a tiny run end to end."""

import importlib.util
import random
from pathlib import Path

import pytest
from arqbench.baselines.hawq import tie_units

from arqbench import plugins
from arqbench.errors import InfeasibleBudget
from arqbench.quantization.layers import profile_layers
from arqbench.quantization.policy import MAX_BITS, MIN_BITS, fixed_layers, float_policy

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "discrimination.py"
spec = importlib.util.spec_from_file_location("discrimination", SCRIPT)
discrimination = importlib.util.module_from_spec(spec)
spec.loader.exec_module(discrimination)


@pytest.fixture(scope="module")
def mobilenet():
    bench = plugins.create("benchmark", "digits-mobilenetv2")
    model = bench.build_model()
    layers = profile_layers(model, bench.input_shape)
    cost = plugins.create("cost_model", "bitops")
    full = cost.cost(layers, float_policy(layers))
    units, held = tie_units(layers, fixed_layers(layers), bench.tied_layers(model))
    return layers, units, held, lambda policy: cost.cost(layers, policy) / full, bench.tied_layers(model)


@pytest.mark.parametrize("budget, search_activations", [(0.011, True), (0.025, False), (0.5, True)])
def test_random_policies_meet_the_budget_ties_and_fixed_layers(mobilenet, budget, search_activations):
    layers, units, held, fraction, ties = mobilenet
    policies = [discrimination.random_policy(units, held, fraction, budget, search_activations, random.Random(k))
                for k in range(8)]
    for policy in policies:
        assert set(policy) == {l.name for l in layers}
        assert fraction(policy) <= budget
        assert policy["net.stem"] == policy["net.fc"] == (MAX_BITS, MAX_BITS)
        assert all(len({policy[n] for n in group}) == 1 for group in ties)
        assert all(MIN_BITS <= b <= MAX_BITS for bits in policy.values() for b in bits)
        if not search_activations:
            assert all(a == MAX_BITS for _, a in policy.values())
    assert len({tuple(sorted(p.items())) for p in policies}) == len(policies)  # seeds give different policies
    again = discrimination.random_policy(units, held, fraction, budget, search_activations, random.Random(3))
    assert again == policies[3]
    if budget < 0.1:  # a tight budget: the lowering stops one bit after it fits, so the budget is nearly used
        assert all(fraction(p) > budget - 0.003 for p in policies)


def test_a_budget_below_every_policy_is_refused(mobilenet):
    layers, units, held, fraction, _ = mobilenet
    with pytest.raises(InfeasibleBudget):
        discrimination.random_policy(units, held, fraction, 0.005, True, random.Random(0))


def test_a_tiny_run_prints_the_spread_and_the_paired_difference(capsys):
    discrimination.main(["--benchmark", "digits", "--policies", "2", "--n", "100", "--test-images", "5",
                         "--finetune-epochs", "0"])
    out = capsys.readouterr().out
    assert "fp32" in out and "uniform" in out and "random-1" in out
    assert "random ACR over 2 policies" in out and "best random (random-" in out


def test_wrong_values_are_one_line_errors(capsys):
    for argv, message in ((["--benchmark", "nope"], "unknown benchmark 'nope'"),
                          (["--benchmark", "digits", "--no-search-activations"], "below the cheapest"),
                          (["--policies", "0"], "--policies must be a positive integer")):
        with pytest.raises(SystemExit) as exit:
            discrimination.main(argv)
        assert message in str(exit.value) and "\n" not in str(exit.value)


def test_distinct_policies_skip_repeats_and_stop_when_the_space_runs_out():
    draws = iter([{"a": (2, 8)}, {"a": (2, 8)}, {"a": (3, 8)}, {"a": (2, 8)}, {"a": (4, 8)}])
    assert discrimination.distinct_policies(3, lambda k: next(draws)) == [{"a": (2, 8)}, {"a": (3, 8)}, {"a": (4, 8)}]
    assert discrimination.distinct_policies(5, lambda k: {"a": (2 + k % 2, 8)}, tries=4) == [{"a": (2, 8)}, {"a": (3, 8)}]
