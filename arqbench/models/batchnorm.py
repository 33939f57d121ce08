"""BatchNorm handling for a quantized model's fine-tune: re-estimating running statistics, freezing them."""

from typing import Iterable

import torch
from torch import nn


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def freeze(model: nn.Module) -> None:
    """Every BatchNorm normalizes with its running statistics and leaves them as they are (its affine weights
    still train): eval mode for the BatchNorm layers only."""
    for module in batchnorms(model):
        module.eval()


@torch.no_grad()
def recalibrate(model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on ``model`` as it computes now (e.g. quantized): reset,
    then one no-grad pass over ``batches`` with only the BatchNorm layers in train mode and momentum None, so
    running mean and variance end as the averages of the per-batch mean and (unbiased) variance of each
    BatchNorm's input over the pass. Leaves ``model`` in eval mode, its BatchNorm momenta as they were."""
    model.eval()
    layers = batchnorms(model)
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for x in batches:
            model(x)
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
            m.eval()
    return model
