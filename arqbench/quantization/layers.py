"""What a search sees of a network: its quantizable layers, in execution order, with their shapes and MACs."""

import torch
from torch import nn

from arqbench.contract import LayerInfo

QUANTIZABLE = (nn.Conv2d, nn.Linear)


def profile_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerInfo]:
    """Measure every Conv2d/Linear layer by one forward of a zero input of ``input_shape`` (C, H, W)."""
    seen: list[tuple[str, nn.Module, torch.Size, torch.Size]] = []
    names = {module: name for name, module in model.named_modules()}

    def hook(module, inputs, output):
        seen.append((names[module], module, inputs[0].shape, output.shape))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, QUANTIZABLE)]
    device = next(model.parameters()).device
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()

    layers, done = [], set()
    for name, module, in_shape, out_shape in seen:
        if name in done:  # a module called twice is profiled at its first call
            continue
        done.add(name)
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            out_hw = out_shape[-2] * out_shape[-1]
            macs = out_hw * module.out_channels * (module.in_channels // module.groups) * kh * kw
            layers.append(LayerInfo(len(layers), name, "conv", module.in_channels, module.out_channels, kh,
                                    module.stride[0], module.groups, module.weight.numel(),
                                    in_shape[-2] * in_shape[-1], macs))
        else:
            tokens = int(torch.Size(out_shape[1:-1]).numel())  # 1 for (N, features)
            layers.append(LayerInfo(len(layers), name, "linear", module.in_features, module.out_features, 1, 1, 1,
                                    module.weight.numel(), tokens, tokens * module.in_features * module.out_features))
    if not layers:
        raise ValueError("model has no Conv2d or Linear layer to quantize")
    return layers
