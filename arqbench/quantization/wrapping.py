"""A quantizer's usual shape, for quantizer plugins to share: copy the model, wrap the layers a policy names,
calibrate the wrappers on the run's noisy batches."""

import copy
from typing import Callable, Iterable, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from arqbench.quantization.layers import QUANTIZABLE


class Calibrated(Protocol):
    """A layer wrapper that observes its inputs while ``calibrating`` and fixes its grid in ``finish_calibration``."""

    calibrating: bool

    def finish_calibration(self) -> None: ...


class QuantWrapper(nn.Module):
    """A base for the module a quantizer puts in place of a Conv2d/Linear (a ``Calibrated`` one): subclasses
    override ``quantize_input`` and ``quantized_weight`` (and, to observe ranges, ``finish_calibration``); the
    forward computes the wrapped layer (its bias, stride, padding, groups) with them."""

    def __init__(self, layer: nn.Module, w_bits: int, a_bits: int):
        super().__init__()
        self.layer = layer
        self.w_bits, self.a_bits = w_bits, a_bits
        self.calibrating = False  # True while ``quantized_copy`` runs the calibration batches

    @property
    def weight(self) -> torch.Tensor:
        return self.layer.weight

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input activation as the layer computes with it (here: unchanged)."""
        return x

    def quantized_weight(self) -> torch.Tensor:
        """The weight as the layer computes with it (here: unchanged)."""
        return self.weight

    def finish_calibration(self) -> None:
        """Fix the grids from what calibration observed."""
        self.calibrating = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, w = self.quantize_input(x), self.quantized_weight()
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, w, self.layer.bias)
        return F.linear(x, w, self.layer.bias)

    def extra_repr(self) -> str:
        return f"w_bits={self.w_bits}, a_bits={self.a_bits}"


def quantized_copy(model: nn.Module, policy: dict, wrap: Callable[[nn.Module, int, int], nn.Module],
                   calibration: Iterable[torch.Tensor]) -> nn.Module:
    """A deep copy of ``model`` whose Conv2d/Linear layers named in ``policy`` are replaced by
    ``wrap(layer, w_bits, a_bits)`` (a ``Calibrated`` module), calibrated by one eval-mode, no-grad pass over
    ``calibration`` (possibly empty: a model about to load its calibrated state). The float model is unchanged."""
    qmodel = copy.deepcopy(model)
    wrapped = []
    for name, module in list(qmodel.named_modules()):
        if isinstance(module, QUANTIZABLE) and name in policy:
            layer = wrap(module, *policy[name])
            parent, _, child = name.rpartition(".")
            setattr(qmodel.get_submodule(parent) if parent else qmodel, child, layer)
            wrapped.append(layer)
    was_training = qmodel.training
    qmodel.eval()
    for layer in wrapped:
        layer.calibrating = True
    with torch.no_grad():
        for batch in calibration:
            qmodel(batch)
    for layer in wrapped:
        layer.finish_calibration()
    return qmodel.train(was_training)
