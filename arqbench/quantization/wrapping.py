"""A quantizer's usual shape, for quantizer plugins to share: copy the model, wrap the layers a policy names,
calibrate the wrappers on the run's noisy batches."""

import copy
from typing import Callable, Iterable, Protocol

import torch
from torch import nn

from arqbench.quantization.layers import QUANTIZABLE


class Calibrated(Protocol):
    """A layer wrapper that observes its inputs while ``calibrating`` and fixes its grid in ``finish_calibration``."""

    calibrating: bool

    def finish_calibration(self) -> None: ...


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
