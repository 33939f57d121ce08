"""Gaussian noise-augmented training (Cohen et al.), used for base models and for every method's fine-tune."""

import dataclasses
import math
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from arqbench.console import progress as make_progress
from arqbench.errors import ArqbenchError
from arqbench.files import torch_load_cached, torch_save_atomic
from arqbench.models import batchnorm
from arqbench.models.benchmark import TrainRecipe
from arqbench.models.data import loader, noisy_batches
from arqbench.models.finetune_recipe import FinetuneRecipe

RECALIBRATION_BATCHES = 50  # at most, of the recipe's batch size: a pass over a small fine-tune split


class TrainingDiverged(ArqbenchError):
    """The loss became NaN or infinite."""


def train(model: nn.Module, dataset: Dataset, recipe: TrainRecipe, sigma: float, device: torch.device, seed: int,
          epochs: int | None = None, state_path: Path | None = None, description: str = "train",
          workers: int = 0, amp: bool = False, steps: int | None = None,
          frozen_batchnorm: bool = False, bn_freeze_step: int | None = None) -> nn.Module:
    """Train ``model`` in place on ``x + N(0, sigma^2)``: SGD, momentum, weight decay, step decay.

    ``steps`` stops after that many optimizer steps (the recipe scaled down to a fixed length, e.g. the
    short fine-tune of a search candidate); otherwise the recipe's (or ``epochs``) epochs run. With
    ``state_path`` the run checkpoints after every epoch and resumes from the last one. With
    ``frozen_batchnorm`` every BatchNorm normalizes with its running statistics and leaves them as they are
    (its affine weights still train); with ``bn_freeze_step``, from that many optimizer steps on (counted over
    the whole run, a resumed one included). A non-finite loss raises ``TrainingDiverged``.
    """
    epochs = recipe.epochs if epochs is None else epochs
    per_epoch = max(1, math.ceil(len(dataset) / recipe.batch_size))
    if steps is not None:
        epochs = math.ceil(steps / per_epoch)
    freeze_at = 0 if frozen_batchnorm else bn_freeze_step
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=recipe.lr_step, gamma=recipe.lr_gamma)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    start = 0
    state = torch_load_cached(state_path) if state_path else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = state["epoch"]
    taken = start * per_epoch
    if freeze_at is not None and taken >= freeze_at:
        batchnorm.freeze(model)
    loss_fn = nn.CrossEntropyLoss()
    with make_progress() as bar:
        task = bar.add_task(description, total=epochs, completed=start)
        for epoch in range(start, epochs):
            torch.manual_seed(seed * 1000 + epoch)
            for x, y in loader(dataset, recipe.batch_size, device, shuffle=True, seed=seed * 1000 + epoch,
                               workers=workers):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                noisy = x + torch.randn_like(x) * sigma
                with torch.autocast(device.type, enabled=amp):
                    loss = loss_fn(model(noisy), y)
                if not math.isfinite(loss.item()):
                    frozen = " with BatchNorm frozen" if freeze_at is not None and taken >= freeze_at else ""
                    raise TrainingDiverged(f"{description}: loss became {loss.item()} in epoch {epoch + 1}{frozen}; "
                                           f"lower the learning rate ({recipe.lr})")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                taken += 1
                if taken == freeze_at:
                    batchnorm.freeze(model)
                if steps is not None and taken >= steps:
                    break
            scheduler.step()
            if state_path:
                torch_save_atomic(state_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                               "scheduler": scheduler.state_dict(), "epoch": epoch + 1})
            bar.advance(task)
    model.eval()
    return model


def finetune(model: nn.Module, dataset: Dataset, recipe: TrainRecipe, sigma: float, device: torch.device,
             seed: int, tuning: FinetuneRecipe = FinetuneRecipe(), **options) -> bool:
    """The protocol's fine-tune of a quantized model (``train`` with ``options``) under ``tuning``'s remedies
    (``arqbench.models.finetune_recipe``), made to finish: when its loss diverges, it reruns from the same
    starting weights with BatchNorm frozen. Returns whether it had to.

    ``tuning``: the learning rate is ``recipe.lr * lr_scale``; with ``bn_recalibrate`` the BatchNorm statistics
    are re-estimated (``batchnorm.recalibrate``, on noisy fine-tune batches: at most ``RECALIBRATION_BATCHES``
    of the recipe's batch size, drawn with ``seed``) before the fine-tune and again after it; with
    ``bn_freeze`` BatchNorm is frozen after that fraction of the run's optimizer steps (rounded). The default
    recipe is exactly ``train`` when it does not diverge. (``equalize`` acts on the float model before it is
    quantized: ``arqbench.quantization.equalization``, applied by whoever quantizes.)

    Why the fallback: at 2-3 bits a channel's quantized input can be nearly constant over a batch, so its
    BatchNorm divides by a batch standard deviation near sqrt(eps) and the gradients explode (norms of 1e8 on
    digits-mobilenetv2 at 0.75% BitOPs). Running statistics bound that factor. On the CPU the rerun is
    deterministic, so a replayed policy fine-tunes the same way (on a GPU, as deterministic as its kernels).
    """
    if options.get("state_path") is not None:
        raise ValueError("finetune does not checkpoint: a rerun would resume from the diverged run's state")
    recipe = dataclasses.replace(recipe, lr=recipe.lr * tuning.lr_scale)
    if tuning.bn_freeze is not None:
        per_epoch = max(1, math.ceil(len(dataset) / recipe.batch_size))
        epochs = recipe.epochs if options.get("epochs") is None else options["epochs"]
        total = options["steps"] if options.get("steps") is not None else per_epoch * epochs
        options["bn_freeze_step"] = round(tuning.bn_freeze * total)

    def recalibrate() -> None:
        if tuning.bn_recalibrate:
            batches = min(RECALIBRATION_BATCHES, math.ceil(len(dataset) / recipe.batch_size))
            batchnorm.recalibrate(model, noisy_batches(dataset, sigma, batches, recipe.batch_size, device, seed,
                                                       options.get("workers", 0)))

    recalibrate()
    start = {name: value.detach().clone() for name, value in model.state_dict().items()}
    try:
        train(model, dataset, recipe, sigma, device, seed, **options)
        recalibrate()
        return False
    except TrainingDiverged:
        pass  # rerun outside the handler: its traceback would keep the first run's optimizer and graph alive
    model.load_state_dict(start)
    train(model, dataset, recipe, sigma, device, seed, frozen_batchnorm=True, **options)
    recalibrate()
    return True


@torch.inference_mode()
def accuracy(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 512,
             sigma: float = 0.0, seed: int = 0, workers: int = 0) -> float:
    """Top-1 accuracy of the base classifier, on clean inputs or (sigma > 0) on one noisy copy of each."""
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    correct = total = 0
    for x, y in loader(dataset, batch_size, device, workers=workers):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if sigma > 0:
            x = x + sigma * torch.randn(x.shape, generator=gen, device=device)
        correct += (model(x).argmax(1) == y).sum().item()
        total += len(y)
    return correct / max(total, 1)
