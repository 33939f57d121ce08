"""Per-layer Hessian traces by Hutchinson's estimator (HAWQ-V2's sensitivity; PyHessian's stopping rule).

For the loss L on a fixed set of noisy batches and one layer's weights W_i (n_i entries), H_i = d^2 L / dW_i^2:

    Tr(H_i) = E_v[v^T H_i v],   v uniform on {-1, +1}^{n_i} (Rademacher probes),

and H_i v is a Hessian-vector product: the gradient with respect to W_i of (dL/dW_i . v) (double backprop),
so H_i is never formed. One probe's variance is 2 * (||H_i||_F^2 - sum_j (H_i)_jj^2). Probing stops for a
layer when the running mean settles: |mean_new - mean_old| / (|mean_old| + 1e-6) < tol, after at least
``MIN_ITER`` and at most ``max_iter`` probes.
"""

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from arqbench.toolkit import loader

MIN_ITER = 2


def noisy_labelled_batches(dataset: Dataset, sigma: float, batches: int, batch_size: int,
                           seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed, seeded sample of (x + N(0, sigma^2), y) batches: the base model's training distribution."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for x, y in loader(dataset, batch_size, torch.device("cpu"), shuffle=True, seed=seed):
        if len(out) == batches:
            break
        out.append((x + sigma * torch.randn(x.shape, generator=gen), y))
    return out


def rademacher(like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return (torch.randint(0, 2, like.shape, generator=gen) * 2 - 1).to(like.device, like.dtype)


def layer_traces(model: nn.Module, names: list[str], batches: list[tuple[torch.Tensor, torch.Tensor]],
                 tol: float = 1e-3, max_iter: int = 100, seed: int = 0) -> dict[str, dict]:
    """``{name: {"trace": Tr(H_i), "iterations": probes used}}`` for the mean cross-entropy over ``batches``.

    Each probe draws one Rademacher vector per unsettled layer; per batch, one forward and one
    create_graph backward are shared by that probe's per-layer Hessian-vector products. ``model`` is used in
    eval mode (the deployed network: batch-norm with running statistics) and is not modified.
    """
    was_training = model.training
    model.eval()
    weights = {name: model.get_submodule(name).weight for name in names}
    flags = {name: w.requires_grad for name, w in weights.items()}
    device = next(iter(weights.values())).device
    total = sum(len(y) for _, y in batches)
    gen = torch.Generator().manual_seed(seed)
    samples: dict[str, list[float]] = {name: [] for name in names}
    active = list(names)
    try:
        for w in weights.values():
            w.requires_grad_(True)
        with torch.enable_grad():
            for _ in range(max_iter):
                probes = {name: rademacher(weights[name], gen) for name in active}
                vhv = {name: torch.zeros((), device=device) for name in active}
                for x, y in batches:
                    x, y = x.to(device), y.to(device)
                    loss = F.cross_entropy(model(x), y, reduction="sum") / total
                    grads = torch.autograd.grad(loss, [weights[n] for n in active], create_graph=True)
                    for k, name in enumerate(active):
                        (hv,) = torch.autograd.grad(grads[k], weights[name], grad_outputs=probes[name],
                                                    retain_graph=k < len(active) - 1)
                        vhv[name] += (hv * probes[name]).sum().detach()
                settled = []
                for name in active:
                    history = samples[name]
                    old = sum(history) / len(history) if history else 0.0
                    history.append(vhv[name].item())
                    new = sum(history) / len(history)
                    if len(history) >= MIN_ITER and abs(new - old) / (abs(old) + 1e-6) < tol:
                        settled.append(name)
                active = [name for name in active if name not in settled]
                if not active:
                    break
    finally:
        for name, w in weights.items():
            w.requires_grad_(flags[name])
        model.train(was_training)
    return {name: {"trace": sum(s) / len(s), "iterations": len(s)} for name, s in samples.items()}
