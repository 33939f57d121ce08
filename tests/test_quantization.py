"""Quantizer ``linear``, layer profiles and cost models."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from arqbench import plugins
from arqbench.errors import ArqbenchError, InfeasibleBudget
from arqbench.quantization import policy as policies
from arqbench.quantization.layers import profile_layers


class HandNet(nn.Module):
    """conv 3->8 k3 s1 p1 on 6x6; depthwise 8 k3 s2 p1 -> 3x3; pointwise 8->4; fc 36->5."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 1, 1)
        self.dw = nn.Conv2d(8, 8, 3, 2, 1, groups=8)
        self.pw = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(36, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.pw(torch.relu(self.dw(torch.relu(self.conv(x)))))).flatten(1))


HAND_MACS = {"conv": 36 * 8 * 3 * 9, "dw": 9 * 8 * 1 * 9, "pw": 9 * 4 * 8, "fc": 36 * 5}


def test_profile_counts_macs_by_hand():
    layers = profile_layers(HandNet(), (3, 6, 6))
    assert [l.name for l in layers] == ["conv", "dw", "pw", "fc"]
    assert {l.name: l.macs for l in layers} == HAND_MACS
    assert layers[1].depthwise and not layers[0].depthwise
    assert [l.in_size for l in layers] == [36, 36, 9, 1]
    assert layers[1].stride == 2 and layers[0].kernel_size == 3


def test_bitops_and_size_cost_models():
    layers = profile_layers(HandNet(), (3, 6, 6))
    policy = {"conv": (8, 8), "dw": (4, 8), "pw": (2, 4), "fc": (8, 8)}
    bitops = plugins.create("cost_model", "bitops")
    size = plugins.create("cost_model", "size")
    assert bitops.cost(layers, policy) == 7776 * 64 + 648 * 32 + 288 * 8 + 180 * 64
    assert bitops.cost(layers, policies.float_policy(layers)) == sum(HAND_MACS.values()) * 32 * 32
    assert size.cost(layers, policy) == 8 * 216 + 4 * 72 + 2 * 32 + 8 * 180


def quantize(model, policy, batches=None):
    batches = batches or [torch.rand(16, 3, 6, 6)]
    return plugins.create("quantizer", "linear").quantize(model, policy, batches)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_weight_levels_per_channel(bits):
    torch.manual_seed(0)
    model = HandNet()
    q = quantize(model, {"conv": (bits, 8)}).eval()
    with torch.no_grad():
        w = q.conv.quantized_weight()
    for channel in w.flatten(1):
        assert len(torch.unique(channel)) <= 2 ** bits - 1
    assert torch.allclose(w.abs().amax(dim=(1, 2, 3)), model.conv.weight.detach().abs().amax(dim=(1, 2, 3)))


def test_eight_bits_is_close_to_float():
    torch.manual_seed(0)
    model = HandNet().eval()
    x = torch.rand(32, 3, 6, 6)
    q = quantize(model, {l: (8, 8) for l in HAND_MACS}, [x])
    with torch.no_grad():
        ref, out = model(x), q(x)
    assert (out - ref).abs().max() < 0.02 * ref.abs().max()
    low = quantize(model, {l: (2, 2) for l in HAND_MACS}, [x])
    with torch.no_grad():
        assert (low(x) - ref).abs().max() > (out - ref).abs().max()  # fewer bits, more error


def test_activations_are_quantized_to_the_calibrated_grid():
    model = HandNet().eval()
    q = quantize(model, {"pw": (8, 2)}, [torch.rand(8, 3, 6, 6)]).eval()
    with torch.no_grad():
        x = q.pw.quantize_input(torch.relu(torch.randn(4, 8, 3, 3)))
    assert (x >= 0).all() and len(torch.unique(x)) <= 4  # unsigned 2-bit: 0..3 times the scale


def test_gradients_flow_through_fake_quantization():
    torch.manual_seed(0)
    q = quantize(HandNet(), {l: (3, 4) for l in HAND_MACS}).train()
    loss = nn.functional.cross_entropy(q(torch.rand(8, 3, 6, 6)), torch.randint(0, 5, (8,)))
    loss.backward()
    for name in HAND_MACS:
        grad = getattr(q, name).layer.weight.grad
        assert grad is not None and grad.abs().sum() > 0


def test_quantized_weight_is_computed_once_in_inference_and_refreshed_after_an_update():
    q = quantize(HandNet(), {"conv": (4, 8)}).eval()
    with torch.inference_mode():
        first = q.conv.quantized_weight()
        assert q.conv.quantized_weight() is first
    with torch.no_grad():
        q.conv.layer.weight.mul_(2.0)
    with torch.inference_mode():
        assert not torch.equal(q.conv.quantized_weight(), first)


def test_quantize_leaves_the_float_model_untouched():
    model = HandNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantize(model, {"conv": (2, 2)})
    assert isinstance(model.conv, nn.Conv2d)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


LAYERS = profile_layers(HandNet(), (3, 6, 6))
BITOPS = plugins.create("cost_model", "bitops")
FLOAT = BITOPS.cost(LAYERS, policies.float_policy(LAYERS))


def fraction(policy):
    return BITOPS.cost(LAYERS, policy) / FLOAT


@settings(max_examples=200, deadline=None)
@given(bits=st.lists(st.tuples(st.integers(2, 8), st.integers(2, 8)), min_size=4, max_size=4),
       budget=st.floats(0.001, 1.0), search_activations=st.booleans(), keep_ends=st.booleans(),
       tie=st.sampled_from([(), (1, 2), (0, 2)]))
def test_action_wall_meets_the_budget_or_reports_infeasible(bits, budget, search_activations, keep_ends, tie):
    """... and gives each tied group one precision (a group holding a fixed layer at 8/8), so what it returns
    breaks no rule the core checks a search's policy by."""
    tied = [[LAYERS[i].name for i in tie]] if tie else []
    fixed = policies.fixed_layers(LAYERS, keep_ends)
    policy = {l.name: (8, 8) if l.name in fixed else b for l, b in zip(LAYERS, bits)}
    if not search_activations:
        policy = {k: (w, 8) for k, (w, a) in policy.items()}
    try:
        fitted = policies.fit_to_budget(policy, LAYERS, fraction, budget, fixed, search_activations, tied)
    except InfeasibleBudget:
        cheapest = fraction(policies.tie(policies.cheapest_policy(LAYERS, fixed, search_activations), tied, fixed))
        assert cheapest > budget
        return
    assert fraction(fitted) <= budget
    assert policies.protocol_breach(fitted, fixed, tied, search_activations) == ""
    held = fixed.union(*(group for group in tied if fixed & set(group)))  # a group holding a fixed layer: 8/8
    for name in held:
        assert fitted[name] == (8, 8)
    for name, (w, a) in fitted.items():
        if name in held:
            continue
        assert 2 <= w <= policy[name][0] and 2 <= a <= policy[name][1]  # bits only ever go down
        if not search_activations:
            assert a == policy[name][1]


def test_protocol_breach_names_the_first_rule_a_policy_breaks():
    names = [l.name for l in LAYERS]
    policy = {name: (4, 8) for name in names}
    assert policies.protocol_breach(policy, set(), [names[1:3]], False) == ""
    assert policies.protocol_breach(policy, {names[0]}, [], False) == \
        f"layer '{names[0]}' is held at (8, 8) (ctx.fixed), got (4, 8)"
    assert "activation bits 3" in policies.protocol_breach({**policy, names[1]: (4, 3)}, set(), [], False)
    assert policies.protocol_breach({**policy, names[1]: (4, 3)}, set(), [], True) == ""
    assert policies.protocol_breach({**policy, names[2]: (3, 8)}, set(), [names[1:3]], False) == \
        f"tied layers {names[1]} (4, 8) and {names[2]} (3, 8) must share one precision (ctx.tied)"


def test_validate_rejects_foreign_or_out_of_range_policies():
    with pytest.raises(ArqbenchError, match="another model"):
        policies.validate({"conv": (4, 4)}, LAYERS)
    with pytest.raises(ArqbenchError, match=r"must be in \[2, 8\]"):
        policies.validate({l.name: (1, 8) for l in LAYERS}, LAYERS)


def test_activation_rounding_matches_pytorch_fake_quantize_and_its_gradient():
    from arqbench.bundled.quantizers.linear_quantizer import quantize_activation

    torch.manual_seed(0)
    x = torch.randn(1000) * 3
    scale = 0.037
    reference = torch.fake_quantize_per_tensor_affine(x, scale, 0, -7, 7)
    ours = quantize_activation(x, 1 / scale, scale, -7, 7)
    assert (ours - reference).abs().max() <= 1e-6
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    torch.fake_quantize_per_tensor_affine(a, scale, 0, -7, 7).sum().backward()
    quantize_activation(b, 1 / scale, scale, -7, 7).sum().backward()
    assert torch.equal(a.grad, b.grad)  # 1 inside the range, 0 where clipped
