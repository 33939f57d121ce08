"""Quantizer ``lsq``: Learned Step Size Quantization (Esser et al., ICLR 2020).

Each value v is fake-quantized with a learnable step size s (an ``nn.Parameter``, so it trains in the
protocol's fine-tune together with the weights and is saved in the model's state_dict):

    v_hat = round(clip(v / s, -Q_N, Q_P)) * s

- Weights: signed, one step per output channel, Q_N = 2^(b-1), Q_P = 2^(b-1) - 1 (2^b levels).
- Activations (each layer's input): one step per tensor; unsigned, Q_N = 0, Q_P = 2^b - 1, when every
  calibration input is non-negative (after a ReLU), else signed like the weights (the first layer sees
  normalised noisy input).
- Initialisation (paper §2.1): s = 2 mean|v| / sqrt(Q_P), the mean over each output channel's weights,
  and over every calibration input of the layer for its activation step.
- Gradients (paper eq. 3 and §2.2): rounding is straight-through, so dv_hat/dv = 1 inside
  -Q_N < v/s < Q_P and 0 outside; dv_hat/ds = round(v/s) - v/s inside, -Q_N below and Q_P above. The
  step's gradient is scaled by g = 1 / sqrt(N Q_P), N the number of values sharing that step: the
  elements of one output channel for a weight step (the paper's N_W, "weights in the layer", for its
  per-layer step, carried over to per-channel steps), and the features of one example for the
  activation step (the paper's N_F).
- The step used is max(s, 1e-8), with the gradient passed straight through to s, so it stays positive
  and a step pushed below zero still gets the gradient that pulls it back. Weight decay of the fine-tune
  applies to the steps too, as in the paper.

With gradients off (eval, certification) a layer's quantized weight and its activation step are
computed once and reused until the weight or a step changes, as ``linear`` does.
"""

import math

import torch
from torch import nn

from arqbench.contract import QuantParams
from arqbench.hookspecs import hookimpl
from arqbench.toolkit import QuantWrapper, quantized_copy

EPS = 1e-8  # smallest step size used


def levels(bits: int, signed: bool) -> tuple[int, int]:
    """(Q_N, Q_P) of a b-bit grid: signed -2^(b-1) .. 2^(b-1) - 1, unsigned 0 .. 2^b - 1."""
    return (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def initial_step(mean_abs: torch.Tensor, q_p: int) -> torch.Tensor:
    """The paper's initial step size: 2 mean|v| / sqrt(Q_P)."""
    return (2 * mean_abs / math.sqrt(q_p)).clamp_min(EPS)


def grad_scale(n: int, q_p: int) -> float:
    """The paper's step-size gradient scale g = 1 / sqrt(N Q_P)."""
    return 1.0 / math.sqrt(n * q_p)


class LearnedStep(torch.autograd.Function):
    """v_hat = round(clip(v / s, -Q_N, Q_P)) * s with the LSQ gradients (paper eq. 3, scaled by g).

    ``step`` broadcasts against ``v`` (a scalar, or one step per output channel shaped (C, 1, ...)).
    """

    @staticmethod
    def forward(ctx, v, step, q_n, q_p, g):
        s = step.clamp_min(EPS)
        scaled = v / s
        ctx.save_for_backward(scaled)
        ctx.shape, ctx.q_n, ctx.q_p, ctx.g = step.shape, q_n, q_p, g
        return scaled.clamp(-q_n, q_p).round_().mul_(s)

    @staticmethod
    def backward(ctx, grad):
        (scaled,) = ctx.saved_tensors
        inside = (scaled > -ctx.q_n) & (scaled < ctx.q_p)
        rounded = scaled.clamp(-ctx.q_n, ctx.q_p).round_()  # -Q_N or Q_P where clipped
        d_step = torch.where(inside, rounded - scaled, rounded)
        grad_step = (grad * d_step).sum_to_size(ctx.shape) * ctx.g
        return grad * inside, grad_step, None, None, None


def lsq(v: torch.Tensor, step: torch.Tensor, q_n: int, q_p: int, g: float) -> torch.Tensor:
    return LearnedStep.apply(v, step, q_n, q_p, g)


def channel_view(step: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A per-output-channel step shaped to broadcast against ``weight``."""
    return step.view(-1, *[1] * (weight.dim() - 1))


def quantize_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel LSQ fake quantization with each channel's step at its initial value."""
    q_n, q_p = levels(bits, signed=True)
    with torch.no_grad():
        step = initial_step(weight.detach().flatten(1).abs().mean(1), q_p)
        return lsq(weight.detach(), channel_view(step, weight), q_n, q_p, 1.0)


def _round_to_grid(x: torch.Tensor, step: float, q_n: int, q_p: int) -> torch.Tensor:
    """Inference-only rounding with a fixed step: in-place ops on the CPU, PyTorch's fused kernel on CUDA."""
    if x.is_cuda:
        return torch.fake_quantize_per_tensor_affine(x, step, 0, -q_n, q_p)
    return torch.div(x, step).round_().clamp_(-q_n, q_p).mul_(step)


class LSQLayer(QuantWrapper):
    """Wraps one Conv2d/Linear: LSQ on its input activation (one step) and its weight (a step per channel), computed
    with ``QuantWrapper``'s forward."""

    def __init__(self, layer: nn.Module, w_bits: int, a_bits: int):
        super().__init__(layer, w_bits, a_bits)
        self.w_levels = levels(w_bits, signed=True)
        self.w_grad_scale = grad_scale(layer.weight[0].numel(), self.w_levels[1])
        mean_abs = layer.weight.detach().flatten(1).abs().mean(1)
        self.w_step = nn.Parameter(initial_step(mean_abs, self.w_levels[1]))
        self.a_step = nn.Parameter(torch.ones((), dtype=mean_abs.dtype, device=mean_abs.device))  # set by calibration
        self.a_levels = levels(a_bits, signed=False)
        self.register_buffer("a_signed", torch.tensor(False))  # the activation grid's sign, in the state_dict
        self.register_load_state_dict_post_hook(_reloaded)  # a reloaded model computes what was saved
        self._seen = [0.0, 0, 0.0]  # calibration: sum |x|, count, min x
        self._cached_weight: tuple[tuple, torch.Tensor] | None = None
        self._cached_step: tuple[tuple, float] | None = None

    def _needs_grad(self, x: torch.Tensor, step: torch.Tensor) -> bool:
        return self.training or torch.is_grad_enabled() and (x.requires_grad or step.requires_grad)

    def quantized_weight(self) -> torch.Tensor:
        w, step = self.weight, self.w_step
        if self._needs_grad(w, step):
            self._cached_weight = None
            return lsq(w, channel_view(step, w), *self.w_levels, self.w_grad_scale)
        key = (w._version, step._version, w.data_ptr(), step.data_ptr(), w.device)
        if self._cached_weight is None or self._cached_weight[0] != key:
            with torch.no_grad():
                self._cached_weight = (key, lsq(w, channel_view(step, w), *self.w_levels, 1.0))
        return self._cached_weight[1]

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            seen = self._seen
            seen[0] += x.detach().abs().sum().item()
            seen[1] += x.numel()
            seen[2] = min(seen[2], x.min().item())
            return x
        step = self.a_step
        if self._needs_grad(x, step):
            return lsq(x, step, *self.a_levels, grad_scale(x[0].numel(), self.a_levels[1]))
        key = (step._version, step.data_ptr())
        if self._cached_step is None or self._cached_step[0] != key:
            self._cached_step = (key, max(step.item(), EPS))
        return _round_to_grid(x, self._cached_step[1], *self.a_levels)

    def finish_calibration(self) -> None:
        """The activation grid: signed if any calibration input was negative; the step from mean|x|."""
        super().finish_calibration()
        total, count, low = self._seen
        self.a_levels = levels(self.a_bits, signed=low < 0)
        self.a_signed.fill_(low < 0)
        with torch.no_grad():
            self.a_step.copy_(initial_step(torch.tensor(total / max(count, 1)), self.a_levels[1]))

    def extra_repr(self) -> str:
        return f"w_bits={self.w_bits}, a_bits={self.a_bits}, signed_input={self.a_levels[0] > 0}"

    def quant_params(self) -> QuantParams:
        """The layer as integers (``arqbench.contract.QuantizedLayer``), for export."""
        with torch.no_grad():
            step = self.w_step.detach().clamp_min(EPS).float()
            integers = self.quantized_weight() / channel_view(step, self.weight)
        q_n, q_p = self.w_levels
        a_n, a_p = self.a_levels
        return QuantParams(integers.round().to(torch.int8), step, (-q_n, q_p), max(self.a_step.item(), EPS), (-a_n, a_p))


def _reloaded(module: LSQLayer, incompatible_keys) -> None:
    module.a_levels = levels(module.a_bits, signed=bool(module.a_signed))


class LSQQuantizer:
    def quantize(self, model: nn.Module, policy: dict, calibration) -> nn.Module:
        """A fake-quantized copy of ``model``: each layer in ``policy`` wrapped, its activation step
        initialised from the ``calibration`` batches."""
        return quantized_copy(model, policy, LSQLayer, calibration)

    def quantize_weight(self, weight: torch.Tensor, bits: int) -> torch.Tensor:
        return quantize_weight(weight, bits)


@hookimpl
def register_quantizer(register):
    register("lsq", LSQQuantizer)
