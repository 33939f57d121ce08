"""Quantizer ``linear``: fake quantization with a straight-through estimator.

Weights: symmetric, per output channel, 2^b - 1 levels in [-max|w|, max|w|].
Activations (each layer's input): per tensor, range calibrated on a few noisy batches;
unsigned [0, max] when the calibrated input is non-negative (post-ReLU), else symmetric.
Gradients pass straight through inside the range (STE), so the model fine-tunes. In eval mode a
layer's quantized weight is computed once and reused until the weight changes; activations are
rounded with in-place tensor ops on the CPU (PyTorch's fused CPU fake-quantize kernel is ~15x
slower there) and with that fused kernel on CUDA (where it is the faster one).
"""


import torch
from torch import nn

from arqbench.contract import QuantParams
from arqbench.hookspecs import hookimpl
from arqbench.toolkit import QuantWrapper, quantized_copy


def weight_scale(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Each output channel's step: max|w| / (2^(b-1) - 1)."""
    flat = weight.detach().reshape(weight.shape[0], -1)
    return (flat.abs().amax(dim=1) / (2 ** (bits - 1) - 1)).clamp_min(1e-12).float()


def quantize_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel fake quantization of a weight tensor to ``bits`` bits."""
    q_max = 2 ** (bits - 1) - 1
    scale = weight_scale(weight, bits)
    zero = torch.zeros(weight.shape[0], dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -q_max, q_max)


def _grid(x: torch.Tensor, inv_scale: float, scale: float, q_min: int, q_max: int) -> torch.Tensor:
    return torch.mul(x, inv_scale).round_().clamp_(q_min, q_max).mul_(scale)


class _StraightThrough(torch.autograd.Function):
    """Rounding to the grid, with the gradient passed through where the input is inside the range."""

    @staticmethod
    def forward(ctx, x, inv_scale, scale, q_min, q_max):
        scaled = x * inv_scale
        ctx.save_for_backward((scaled >= q_min - 0.5) & (scaled <= q_max + 0.5))
        return scaled.round_().clamp_(q_min, q_max).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def quantize_activation(x: torch.Tensor, inv_scale: float, scale: float, q_min: int, q_max: int) -> torch.Tensor:
    """Per-tensor fake quantization of an activation; on CUDA PyTorch's fused kernel is the fast one."""
    if x.is_cuda:
        return torch.fake_quantize_per_tensor_affine(x, scale, 0, q_min, q_max)
    if torch.is_grad_enabled() and x.requires_grad:
        return _StraightThrough.apply(x, inv_scale, scale, q_min, q_max)
    return _grid(x, inv_scale, scale, q_min, q_max)


def _reloaded(module: "FakeQuant", incompatible_keys) -> None:
    module.set_activation_grid()


class FakeQuant(QuantWrapper):
    """Wraps one Conv2d/Linear: quantizes its input activation and its weight (``QuantWrapper``'s forward)."""

    def __init__(self, layer: nn.Module, w_bits: int, a_bits: int):
        super().__init__(layer, w_bits, a_bits)
        self.register_buffer("a_min", torch.tensor(float("inf")))
        self.register_buffer("a_max", torch.tensor(float("-inf")))
        self._act_params = (1.0, 1.0, 0, 2**a_bits - 1)  # (1/scale, scale, q_min, q_max), set by calibration
        self._cached: tuple[tuple, torch.Tensor] | None = None
        # a reloaded model computes what was saved: the grid is recomputed from the loaded a_min/a_max
        self.register_load_state_dict_post_hook(_reloaded)

    def quantized_weight(self) -> torch.Tensor:
        if self.training or torch.is_grad_enabled() and self.weight.requires_grad:
            self._cached = None
            return quantize_weight(self.weight, self.w_bits)
        key = (self.weight._version, self.weight.data_ptr(), self.weight.device, self.w_bits)
        if self._cached is None or self._cached[0] != key:
            with torch.no_grad():
                self._cached = (key, quantize_weight(self.weight, self.w_bits))
        return self._cached[1]

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.a_min.fill_(min(self.a_min.item(), x.min().item()))
            self.a_max.fill_(max(self.a_max.item(), x.max().item()))
            return x
        return quantize_activation(x, *self._act_params)

    def finish_calibration(self) -> None:
        """Fix the activation grid from the observed range."""
        super().finish_calibration()
        self.set_activation_grid()

    def set_activation_grid(self) -> None:
        """The activation grid from the ``a_min``/``a_max`` buffers, kept as Python numbers (no device sync per
        forward); after calibration and after ``load_state_dict``."""
        low, high = self.a_min.item(), self.a_max.item()
        if low >= 0:
            q_min, q_max = 0, 2 ** self.a_bits - 1
            bound = max(high, 1e-8)
        else:
            q_max = 2 ** (self.a_bits - 1) - 1
            q_min, bound = -q_max, max(-low, high, 1e-8)
        self._act_params = (q_max / bound, bound / q_max, q_min, q_max)

    def quant_params(self) -> QuantParams:
        """The layer as integers (``arqbench.contract.QuantizedLayer``), for export."""
        q_max = 2 ** (self.w_bits - 1) - 1
        with torch.no_grad():
            scale = weight_scale(self.weight, self.w_bits)
            integers = self.quantized_weight() / scale.view(-1, *[1] * (self.weight.dim() - 1))
        _, act_scale, q_min, q_max_a = self._act_params
        return QuantParams(integers.round().to(torch.int8), scale, (-q_max, q_max), act_scale, (q_min, q_max_a))


class LinearQuantizer:
    def quantize(self, model: nn.Module, policy: dict, calibration) -> nn.Module:
        """A fake-quantized copy of ``model``: each layer in ``policy`` wrapped, activation ranges calibrated."""
        return quantized_copy(model, policy, FakeQuant, calibration)

    def quantize_weight(self, weight: torch.Tensor, bits: int) -> torch.Tensor:
        return quantize_weight(weight, bits)


@hookimpl
def register_quantizer(register):
    register("linear", LinearQuantizer, default=True)
