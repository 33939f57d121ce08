"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias
Correction", section 4.1) of a float model before it is quantized.

For a pair of convolutions where the first's output channel i reaches the second's input channel i through
only a BatchNorm and a positively homogeneous activation (ReLU, or none), scaling that channel by 1/s_i after
the first and s_i in the second leaves the function unchanged: relu(x / s) * s = relu(x) for s > 0. With

    s_i = sqrt(r1_i * r2_i) / r2_i,

r1_i the range (max |w|) of the first layer's output channel i with its BatchNorm folded in
(w * gamma_i / sqrt(var_i + eps)) and r2_i the range of the second layer's input channel i, both ranges become
sqrt(r1_i * r2_i). A layer in two pairs (the second of one, the first of the next) is equalized by repeating
over all pairs (``ROUNDS`` times, or until no scale moves by more than 1e-6).

BatchNorm is not folded: the quantized model keeps its BatchNorm layers (the fine-tune trains them). The
1/s_i goes into that BatchNorm's affine weight and bias (gamma_i / s_i, beta_i / s_i), which scales its output
channel i by 1/s_i in eval and train mode alike; without a BatchNorm, into the first layer's weight and bias.

ReLU6 is not positively homogeneous (relu6(x / s) * s clips at 6 s), so a pair joined by ReLU6 (or hardtanh)
is left alone by ``equalize(model)``: the function stays exactly the float model's. ``equalize(model,
relu6_as_relu=True)`` first replaces every ReLU6 by ReLU, as AIMET's pipeline does for MobileNets, and then
equalizes those pairs too: the float model's function changes wherever a pre-activation exceeds 6.

Pairs are found on the model's ``torch.fx`` graph: a Conv2d whose output is read only by a BatchNorm2d (or
directly), whose output is read only by the activation (or directly), whose output is read only by a Conv2d.
A tensor that is also read elsewhere (a residual add, a concatenation) cannot be rescaled, so it is not a pair.
"""

import copy
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.nn import functional as F

ROUNDS = 20
RELU = {F.relu, torch.relu}
RELU6 = {F.relu6, F.hardtanh}


@dataclass
class Pair:
    first: str  # the first convolution's module name
    batchnorm: str | None  # the BatchNorm between them, if any
    second: str


def equalize(model: nn.Module, relu6_as_relu: bool = False) -> tuple[nn.Module, list[Pair]]:
    """A copy of ``model`` (eval mode) with every equalizable pair equalized, and the pairs. With
    ``relu6_as_relu`` the copy is the model's ``torch.fx.GraphModule`` with ReLU6 replaced by ReLU (its module
    names are the model's); otherwise a deep copy, its structure untouched."""
    model = copy.deepcopy(model).eval()
    graph = fx.symbolic_trace(model)
    if relu6_as_relu:
        _relu6_to_relu(graph)
        model = graph
    pairs = find_pairs(graph)
    with torch.no_grad():
        for _ in range(ROUNDS):
            moved = max((_equalize_pair(model, pair) for pair in pairs), default=0.0)
            if moved < 1e-6:
                break
    return model, pairs


def _relu6_to_relu(graph: fx.GraphModule) -> None:
    for node in graph.graph.nodes:
        if node.op == "call_function" and node.target in RELU6 and _is_relu6(node):
            node.target, node.args, node.kwargs = F.relu, node.args[:1], {}
        elif node.op == "call_module" and isinstance(graph.get_submodule(node.target), (nn.ReLU6, nn.Hardtanh)):
            module = graph.get_submodule(node.target)
            if module.min_val == 0:
                node.op, node.target, node.args, node.kwargs = "call_function", F.relu, node.args[:1], {}
    graph.recompile()


def _is_relu6(node: fx.Node) -> bool:
    if node.target is F.relu6:
        return True
    low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
    return low == 0  # hardtanh(x, 0, t): clips at t > 0 like ReLU6


def find_pairs(graph: fx.GraphModule) -> list[Pair]:
    """The (conv, BatchNorm?, ReLU?, conv) chains of ``graph`` whose middle tensors have one reader each."""
    modules = dict(graph.named_modules())

    def module(node, kind):
        return node.op == "call_module" and isinstance(modules.get(node.target), kind)

    pairs = []
    for node in graph.graph.nodes:
        if not module(node, nn.Conv2d) or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        prev = node.args[0]
        if prev.op == "call_function" and prev.target in RELU or module(prev, nn.ReLU):
            prev = _single_reader_input(prev)
        norm = None
        if prev is not None and module(prev, nn.BatchNorm2d):
            norm, prev = prev.target, _single_reader_input(prev)
        if prev is not None and module(prev, nn.Conv2d) and len(prev.users) == 1:
            pairs.append(Pair(prev.target, norm, node.target))
    return pairs


def _single_reader_input(node: fx.Node) -> fx.Node | None:
    """The node's input when ``node`` is its only reader, and ``node`` has one reader too; else None."""
    source = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    if source is None or len(source.users) != 1 or len(node.users) != 1:
        return None
    return source


def ranges(model: nn.Module, pair: Pair) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel between the pair: r1 (the first layer's output range, BatchNorm folded in) and r2 (the
    second layer's input range)."""
    first, second = model.get_submodule(pair.first), model.get_submodule(pair.second)
    weight = first.weight.detach().flatten(1)
    if pair.batchnorm is not None:
        norm = model.get_submodule(pair.batchnorm)
        gain = (norm.weight if norm.affine else torch.ones_like(norm.running_var)) / (norm.running_var + norm.eps).sqrt()
        weight = weight * gain.detach()[:, None]
    r1 = weight.abs().amax(1)
    return r1, _input_view(second).detach().abs().amax((1, 3)).flatten()


def _input_view(conv: nn.Conv2d) -> torch.Tensor:
    """The second layer's weight as [groups, out per group, in per group, k*k]: input channel
    g * in_per_group + j is ``[g, :, j]``."""
    out, per_group = conv.weight.shape[:2]
    return conv.weight.view(conv.groups, out // conv.groups, per_group, -1)


def _equalize_pair(model: nn.Module, pair: Pair) -> float:
    """Equalize one pair in place; the largest |log s_i| it applied."""
    r1, r2 = ranges(model, pair)
    valid = (r1 > 0) & (r2 > 0)
    s = torch.where(valid, (r1 * r2).sqrt() / torch.where(valid, r2, 1.0), torch.ones_like(r1))
    holder = model.get_submodule(pair.batchnorm or pair.first)
    if pair.batchnorm is not None and not holder.affine:
        return 0.0  # no affine weight to carry the scale
    holder.weight.div_(s.view(-1, *[1] * (holder.weight.dim() - 1)))
    if holder.bias is not None:
        holder.bias.div_(s)
    second = model.get_submodule(pair.second)
    view = _input_view(second)
    view.mul_(s.view(second.groups, 1, -1, 1))
    return s.log().abs().max().item()
