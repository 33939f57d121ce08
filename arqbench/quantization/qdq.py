"""A quantized layer as integers, and as the quantize/dequantize (QDQ) graph that ONNX runtimes read.

A quantizer's wrapped layers may describe themselves as ``QuantParams`` (``arqbench.contract.QuantizedLayer``):
integer weights with one scale per output channel, and the grid of the input activation. ``QDQLayer`` computes
the layer from exactly those numbers:

    x_q = clip(round(x / s_x), q_min, q_max)            (round half to even, as ONNX QuantizeLinear)
    y   = layer(x_q * s_x, W_int * s_w[c])

and exports (``torch.onnx.export(..., dynamo=False)``) as QuantizeLinear -> [Clip] -> DequantizeLinear for the
activation (uint8 when the grid is unsigned, else int8; Clip to the b-bit levels where they are narrower than
the 8-bit type) and DequantizeLinear (per channel, axis 0) of an int8 initializer for the weight.
"""

import torch
from torch import nn
from torch.nn import functional as F

from arqbench.contract import QuantParams


def _type_of(levels: tuple[int, int]) -> torch.dtype:
    return torch.uint8 if levels[0] >= 0 else torch.int8


def _full_range(dtype: torch.dtype) -> tuple[int, int]:
    info = torch.iinfo(dtype)
    return info.min, info.max


class _QuantizeDequantize(torch.autograd.Function):
    """Per-tensor QDQ of an activation; ONNX: QuantizeLinear -> Clip (when narrower) -> DequantizeLinear."""

    @staticmethod
    def forward(ctx, x, scale, zero, q_min: int, q_max: int):
        return torch.div(x, scale).round_().clamp_(q_min, q_max).mul_(scale)

    @staticmethod
    def symbolic(g, x, scale, zero, q_min: int, q_max: int):
        q = g.op("QuantizeLinear", x, scale, zero)
        dtype = torch.uint8 if q_min >= 0 else torch.int8
        if (q_min, q_max) != _full_range(dtype):
            low = g.op("Constant", value_t=torch.tensor(q_min, dtype=dtype))
            high = g.op("Constant", value_t=torch.tensor(q_max, dtype=dtype))
            q = g.op("Clip", q, low, high)
        return g.op("DequantizeLinear", q, scale, zero)


class _Dequantize(torch.autograd.Function):
    """Per-output-channel dequantization of integer weights; ONNX: DequantizeLinear (axis 0)."""

    @staticmethod
    def forward(ctx, integers, scale, zero):
        return integers.float() * scale.view(-1, *[1] * (integers.dim() - 1))

    @staticmethod
    def symbolic(g, integers, scale, zero):
        return g.op("DequantizeLinear", integers, scale, zero, axis_i=0)


class QDQLayer(nn.Module):
    """A Conv2d/Linear computing from ``QuantParams``: what an export writes for one quantized layer."""

    def __init__(self, layer: nn.Module, params: QuantParams):
        super().__init__()
        self.layer = layer
        self.input_levels, self.weight_levels = params.input_levels, params.weight_levels
        self.register_buffer("weight_int", params.weight.to(torch.int8).clone())
        self.register_buffer("weight_scale", params.weight_scale.detach().float().clone())
        self.register_buffer("weight_zero", torch.zeros(len(params.weight_scale), dtype=torch.int8))
        self.register_buffer("input_scale", torch.tensor(float(params.input_scale), dtype=torch.float32))
        self.register_buffer("input_zero", torch.tensor(0, dtype=_type_of(params.input_levels)))

    @property
    def bits(self) -> tuple[int, int]:
        """(weight bits, activation bits): the fewest bits that hold each grid."""
        return tuple(int(hi - lo).bit_length() for lo, hi in (self.weight_levels, self.input_levels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _QuantizeDequantize.apply(x, self.input_scale, self.input_zero, *self.input_levels)
        w = _Dequantize.apply(self.weight_int, self.weight_scale, self.weight_zero)
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, w, self.layer.bias)
        return F.linear(x, w, self.layer.bias)


def as_qdq(model: nn.Module) -> nn.Module:
    """``model`` (a quantized model, changed in place) with every layer that has ``quant_params()`` replaced by
    its ``QDQLayer``; returns the model. A model with no such layer is refused by the caller."""
    for name, module in list(model.named_modules()):
        if name and callable(getattr(module, "quant_params", None)):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, QDQLayer(module.layer, module.quant_params()))
    return model
