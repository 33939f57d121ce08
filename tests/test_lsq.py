"""Quantizer ``lsq`` (learned step sizes, Esser et al. 2020): grids, initial steps, gradients, training, runs."""

import json
import math

import pytest
import torch
from arqbench.bundled.quantizers.lsq_quantizer import EPS, LSQLayer, lsq
from conftest import TINY
from hypothesis import given, settings
from hypothesis import strategies as st
from test_quantization import HAND_MACS, HandNet
from torch import nn
from torch.utils.data import TensorDataset

from arqbench import plugins
from arqbench.models import checkpoints
from arqbench.models.benchmark import TrainRecipe
from arqbench.models.training import train

ALL = {name: (4, 4) for name in HAND_MACS}


def quantize(model, policy, batches=None):
    batches = batches or [torch.rand(16, 3, 6, 6)]
    return plugins.create("quantizer", "lsq").quantize(model, policy, batches)


def paper_step_gradient(v: torch.Tensor, s: float, q_n: int, q_p: int) -> torch.Tensor:
    """d v_hat / d s of the paper's eq. 3, elementwise, without the gradient scale."""
    r = v / s
    return torch.where(r <= -q_n, torch.full_like(r, -q_n),
                       torch.where(r >= q_p, torch.full_like(r, q_p), torch.round(r) - r))


# --- grids and initial steps ---------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(bits=st.integers(2, 8), spread=st.floats(0.01, 100.0), seed=st.integers(0, 2**16))
def test_at_most_2_to_the_b_weight_levels_per_channel_on_the_signed_grid(bits, spread, seed):
    torch.manual_seed(seed)
    model = HandNet()
    with torch.no_grad():
        model.conv.weight.mul_(spread)
    q = quantize(model, {"conv": (bits, 8)}).eval()
    with torch.no_grad():
        w = q.conv.quantized_weight()
    step = q.conv.w_step.detach()
    mean_abs = model.conv.weight.detach().flatten(1).abs().mean(1)
    assert torch.allclose(step, 2 * mean_abs / math.sqrt(2 ** (bits - 1) - 1))  # the paper's initial step
    for channel, s in zip(w.flatten(1), step):
        assert len(torch.unique(channel)) <= 2**bits
        k = channel / s  # integers in [-2^(b-1), 2^(b-1) - 1]
        assert torch.allclose(k, k.round(), atol=1e-3)
        assert k.min() >= -(2 ** (bits - 1)) - 1e-3 and k.max() <= 2 ** (bits - 1) - 1 + 1e-3


@pytest.mark.parametrize("bits", [2, 3, 8])
def test_the_signed_grid_is_the_papers_asymmetric_one(bits):
    """Q_N = 2^(b-1), Q_P = 2^(b-1) - 1: large values reach both ends, so there are exactly 2^b levels."""
    w = torch.cat([torch.zeros(100_000), torch.linspace(-50, 50, 4001)]).reshape(1, -1)  # small mean|w|, wide range
    q = plugins.create("quantizer", "lsq").quantize_weight(w, bits)
    s = 2 * w.abs().mean() / math.sqrt(2 ** (bits - 1) - 1)
    assert len(torch.unique(q)) == 2**bits
    assert torch.isclose(q.min(), -(2 ** (bits - 1)) * s) and torch.isclose(q.max(), (2 ** (bits - 1) - 1) * s)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_activations_post_relu_are_unsigned_with_at_most_2_to_the_b_levels(bits):
    torch.manual_seed(0)
    calibration = [torch.rand(16, 3, 6, 6), torch.rand(16, 3, 6, 6)]
    model = HandNet().eval()
    q = quantize(model, {"pw": (8, bits)}, calibration).eval()
    inputs = []  # pw's input on the calibration batches (the layers before it stay float)
    model.pw.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
    with torch.no_grad():
        for batch in calibration:
            model(batch)
    mean_abs = torch.cat([x.flatten() for x in inputs]).abs().mean()
    assert torch.isclose(q.pw.a_step.detach(), 2 * mean_abs / math.sqrt(2**bits - 1))
    with torch.no_grad():
        x = q.pw.quantize_input(torch.relu(torch.randn(64, 8, 3, 3)) * 1000)
    assert (x >= 0).all() and len(torch.unique(x)) <= 2**bits
    assert torch.isclose(x.max(), (2**bits - 1) * q.pw.a_step.detach())


@pytest.mark.parametrize("bits", [2, 4])
def test_a_layer_whose_calibration_input_is_negative_gets_a_signed_grid(bits):
    q = quantize(HandNet().eval(), {"conv": (8, bits), "pw": (8, bits)}, [torch.randn(16, 3, 6, 6)]).eval()
    assert q.conv.a_levels == (2 ** (bits - 1), 2 ** (bits - 1) - 1) and q.pw.a_levels == (0, 2**bits - 1)
    with torch.no_grad():
        x = q.conv.quantize_input(torch.linspace(-50, 50, 100 * 108).reshape(100, 3, 6, 6))  # every level, and past both ends
    s = q.conv.a_step.detach()
    assert len(torch.unique(x)) == 2**bits
    assert torch.isclose(x.min(), -(2 ** (bits - 1)) * s) and torch.isclose(x.max(), (2 ** (bits - 1) - 1) * s)


# --- gradients ------------------------------------------------------------------------------------------


def test_step_gradient_matches_a_finite_difference():
    """Straight-through rounding means: differentiate s * (clip(v/s) + r) with the rounding offset r held at
    its value at s. A central difference of that function, in float64, must equal the step's gradient / g."""
    torch.manual_seed(0)
    v = torch.randn(12, dtype=torch.float64) * 2
    c = torch.randn(12, dtype=torch.float64)  # loss = sum(c * v_hat)
    s0, q_n, q_p, g = 0.45, 4, 3, 0.3
    step = torch.tensor(s0, dtype=torch.float64, requires_grad=True)
    (c * lsq(v, step, q_n, q_p, g)).sum().backward()

    clipped = (v / s0).clamp(-q_n, q_p)
    offset = clipped.round() - clipped

    def surrogate(s):
        return (c * s * ((v / s).clamp(-q_n, q_p) + offset)).sum().item()

    h = 1e-6
    finite_difference = (surrogate(s0 + h) - surrogate(s0 - h)) / (2 * h)
    assert step.grad.item() / g == pytest.approx(finite_difference, rel=1e-6)
    assert ((v / s0 > q_p) | (v / s0 < -q_n)).any() and ((v / s0).abs() < 3).any()  # both regimes exercised


def test_value_and_gradients_match_pytorchs_learnable_fake_quantize():
    """PyTorch's own LSQ kernel (used by torch.ao's learnable fake-quantize), away from the half step beyond each
    end of the grid, where it counts values as inside (it clips after rounding) and the paper as outside."""
    torch.manual_seed(0)
    steps = torch.tensor([1.0, 0.5, 2.0])
    units = torch.randint(-4, 3, (3, 20)).float() + torch.rand(3, 20) * 0.8 + 0.1  # inside, off rounding ties
    units[:, :3] = torch.tensor([5.2, -7.1, 9.0])  # clipped
    w = units * steps[:, None]
    cotangent = torch.randn_like(w)
    ours_w, ours_s = w.clone().requires_grad_(), steps.clone().requires_grad_()
    out = lsq(ours_w, ours_s[:, None], 4, 3, 0.3)
    out.backward(cotangent)
    ref_w, ref_s = w.clone().requires_grad_(), steps.clone().requires_grad_()
    ref = torch._fake_quantize_learnable_per_channel_affine(ref_w, ref_s, torch.zeros(3), 0, -4, 3, 0.3)
    ref.backward(cotangent)
    assert torch.equal(out, ref)
    assert torch.equal(ours_w.grad, ref_w.grad)
    assert torch.allclose(ours_s.grad, ref_s.grad, rtol=1e-5)


def test_gradient_scales_are_one_over_root_n_qp():
    """Weight step: N = elements of one output channel; activation step: N = features of one example."""
    torch.manual_seed(0)
    q = quantize(HandNet(), {"conv": (4, 8), "pw": (8, 3)}).train()
    conv = q.conv
    cotangent = torch.randn(8, 3, 3, 3)
    conv.quantized_weight().backward(cotangent)
    w, s = conv.weight.detach(), conv.w_step.detach()
    raw = (cotangent * paper_step_gradient(w, s[:, None, None, None], 8, 7)).sum(dim=(1, 2, 3))
    assert torch.allclose(conv.w_step.grad, raw / math.sqrt(3 * 3 * 3 * 7), rtol=1e-5)
    r = w / s[:, None, None, None]
    assert torch.equal(conv.weight.grad, cotangent * ((r > -8) & (r < 7)))  # straight through, inside only

    for batch in (1, 5):  # independent of the batch size
        pw = q.pw
        pw.a_step.grad = None
        x = torch.relu(torch.randn(batch, 8, 3, 3)).requires_grad_()
        cotangent = torch.randn(batch, 8, 3, 3)
        pw.quantize_input(x).backward(cotangent)
        raw = (cotangent * paper_step_gradient(x.detach(), pw.a_step.item(), 0, 7)).sum()
        assert pw.a_step.grad.item() == pytest.approx(raw.item() / math.sqrt(8 * 3 * 3 * 7), rel=1e-5)


def test_a_step_pushed_below_zero_is_used_as_a_tiny_positive_one_and_still_learns():
    v = torch.tensor([0.5, -1.0, 2.0])
    step = torch.tensor(-0.1, requires_grad=True)
    out = lsq(v, step, 4, 3, 1.0)
    assert torch.equal(out, torch.tensor([3.0, -4.0, 3.0]) * EPS)  # every value clipped on the EPS grid
    out.sum().backward()
    assert step.grad.item() == pytest.approx(3 - 4 + 3)  # pulls the step the right way (and is not zero)


# --- training, saving, inference ------------------------------------------------------------------------


def tiny_finetune(model, epochs=2):
    torch.manual_seed(0)
    data = TensorDataset(torch.rand(64, 3, 6, 6), torch.randint(0, 5, (64,)))
    return train(model, data, TrainRecipe(epochs=epochs, lr=0.05, batch_size=16), 0.25, torch.device("cpu"), 0)


def test_step_sizes_train_in_the_fine_tune_and_are_saved_in_the_state_dict():
    torch.manual_seed(0)
    q = quantize(HandNet(), ALL)
    state = q.state_dict()
    assert {f"{name}.{p}" for name in HAND_MACS for p in ("w_step", "a_step")} <= set(state)
    before = {k: v.clone() for k, v in state.items() if k.endswith("_step")}
    tiny_finetune(q)
    after = q.state_dict()
    for key, value in before.items():
        assert not torch.equal(after[key], value), key
        assert (after[key] > 0).all()

    reloaded = quantize(HandNet(), ALL)
    reloaded.load_state_dict(after)
    x = torch.rand(8, 3, 6, 6)
    with torch.inference_mode():
        assert torch.equal(reloaded.eval()(x), q.eval()(x))


def test_quantized_weight_is_computed_once_in_inference_and_refreshed_after_a_step_changes():
    q = quantize(HandNet(), {"conv": (4, 8)}).eval()
    x = torch.rand(4, 3, 6, 6)
    with torch.inference_mode():
        first, out = q.conv.quantized_weight(), q(x)
        assert q.conv.quantized_weight() is first
    with torch.no_grad():
        q.conv.w_step.mul_(2.0)
        q.conv.a_step.mul_(3.0)
    with torch.inference_mode():
        assert not torch.equal(q.conv.quantized_weight(), first) and not torch.equal(q(x), out)
    with torch.no_grad():  # the inference path rounds exactly as the training path does
        q.train()
        trained_path = q(x)
    with torch.inference_mode():
        assert torch.allclose(q.eval()(x), trained_path, atol=1e-6)


def test_step_sizes_follow_the_models_dtype():
    q = quantize(HandNet().double(), ALL, [torch.rand(16, 3, 6, 6, dtype=torch.float64)])
    assert all(p.dtype == torch.float64 for name, p in q.named_parameters() if name.endswith("_step"))
    q.train()(torch.rand(2, 3, 6, 6, dtype=torch.float64)).sum().backward()
    assert q.conv.w_step.grad.dtype == q.pw.a_step.grad.dtype == torch.float64


def test_quantize_leaves_the_float_model_untouched_and_wraps_only_the_policy_layers():
    model = HandNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = quantize(model, {"conv": (2, 2), "fc": (3, 5)})
    assert isinstance(model.conv, nn.Conv2d)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(q.conv, LSQLayer) and isinstance(q.fc, LSQLayer) and isinstance(q.pw, nn.Conv2d)
    assert (q.fc.w_bits, q.fc.a_bits) == (3, 5)


# --- on digits ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    """A briefly noise-trained digits model, so this file does not wait for the full base-model training."""
    benchmark = plugins.create("benchmark", "digits")
    torch.manual_seed(0)
    model = benchmark.build_model()
    train(model, benchmark.splits(None).train, benchmark.recipe, 0.25, torch.device("cpu"), 0, epochs=3)
    path = tmp_path_factory.mktemp("lsq") / "digits.pt"
    checkpoints.save(model, path, benchmark="digits", sigma=0.25)
    return model.eval(), path


def test_eight_bit_lsq_stays_close_to_float_on_digits(digits_checkpoint):
    """No fine-tune: the paper's initial steps alone (s = 2 mean|v| / sqrt(Q_P), coarser than max-abs at 8 bits).

    The base model differs with torch's thread count (training's reductions run in another order), so the bounds
    hold for every model, not one: over ten quick-trained digits models (seeds 0-4, 1 and 4 threads, 360 noisy
    test images) 8-bit LSQ changed 9-21 predictions, moved accuracy by at most 8 images and the logits by
    5-10% (relative norm); 2-bit LSQ changed 151-250, lost 76-183 images and moved the logits by 71-95%."""
    from arqbench.models.data import ProtocolData
    from arqbench.quantization.layers import profile_layers
    from arqbench.search.context import calibration_batches

    model, _ = digits_checkpoint
    benchmark = plugins.create("benchmark", "digits")
    data = ProtocolData.from_splits(benchmark.splits(None), 8, benchmark.search_images)
    policy = {l.name: (8, 8) for l in profile_layers(model, benchmark.input_shape)}
    q = plugins.create("quantizer", "lsq").quantize(model, policy, calibration_batches(data, 0.25, torch.device("cpu"), 0))
    low = plugins.create("quantizer", "lsq").quantize(model, {k: (2, 2) for k in policy},
                                                       calibration_batches(data, 0.25, torch.device("cpu"), 0))
    x = torch.stack([data.test[i][0] for i in range(len(data.test))])
    y = torch.tensor([data.test[i][1] for i in range(len(data.test))])
    x = x + 0.25 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref, out, worse = model(x), q.eval()(x), low.eval()(x)
    images = len(y)
    lost = ((ref.argmax(1) == y).sum() - (out.argmax(1) == y).sum()).abs().item()
    changed, changed_low = ((out.argmax(1) != ref.argmax(1)).sum().item(),
                            (worse.argmax(1) != ref.argmax(1)).sum().item())
    assert lost <= 0.05 * images, (lost, images)
    assert changed <= 0.10 * images and 3 * changed < changed_low, (changed, changed_low, images)
    assert (out - ref).norm() < 0.2 * ref.norm() and 3 * (out - ref).norm() < (worse - ref).norm()


def test_run_with_lsq_on_digits(cli, tmp_path, digits_checkpoint):
    _, path = digits_checkpoint
    code, out, err = cli("run", "--quantizer", "lsq", "--methods", "uniform,hawq", "--sigma", "0.25",
                         "--budget", "0.03", "--out", tmp_path, "--checkpoint", path,
                         "--option", "hawq.batches=1", "--option", "hawq.max_iter=3", *TINY)
    assert code == 0, err
    records = {r["method"]: r for r in (json.loads(p.read_text()) for p in tmp_path.rglob("*-seed0.json"))}
    for method in ("uniform", "hawq"):
        record = records[method]
        assert record["status"] == "ok" and record["config"]["protocol"]["quantizer"] == "lsq"
        assert record["cost"]["within_budget"]
