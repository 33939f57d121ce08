"""The protocol's fine-tune: exactly ``train`` unless it diverges, then a deterministic rerun with BatchNorm frozen."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from arqbench.models.benchmark import TrainRecipe
from arqbench.models.training import TrainingDiverged, finetune, train

RECIPE = TrainRecipe(epochs=2, lr=0.05, batch_size=16, lr_step=100, weight_decay=5e-4)
CPU = torch.device("cpu")


def data() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=generator)
    return TensorDataset(x, (x[:, 0] > 0).long())


class Net(nn.Module):
    """Linear -> BatchNorm -> ReLU -> Linear; with ``poison_batch_statistics`` its output is NaN whenever its
    BatchNorm normalizes with batch statistics (what an exploding low-bit fine-tune ends in)."""

    def __init__(self, poison_batch_statistics: bool = False, poison_always: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.fc, self.bn, self.out = nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)
        self.poison_batch_statistics, self.poison_always = poison_batch_statistics, poison_always

    def forward(self, x):
        y = self.out(torch.relu(self.bn(self.fc(x))))
        if self.poison_always or self.poison_batch_statistics and self.bn.training:
            y = y * float("nan")
        return y


def state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_finetune_that_does_not_diverge_is_exactly_train():
    plain, tuned = Net(), Net()
    train(plain, data(), RECIPE, 0.25, CPU, seed=3)
    assert finetune(tuned, data(), RECIPE, 0.25, CPU, seed=3) is False
    for name, value in state(plain).items():
        assert torch.equal(value, tuned.state_dict()[name]), name


def test_a_diverging_finetune_reruns_from_its_start_with_batchnorm_frozen():
    model = Net(poison_batch_statistics=True)
    start = state(model)
    assert finetune(model, data(), RECIPE, 0.25, CPU, seed=3, steps=6) is True
    # the rerun starts from the same weights and is frozen-BatchNorm training from them, step for step
    reference = Net()
    reference.load_state_dict(start)
    train(reference, data(), RECIPE, 0.25, CPU, seed=3, steps=6, frozen_batchnorm=True)
    for name, value in state(reference).items():
        assert torch.equal(value, model.state_dict()[name]), name
    # running statistics are left as they were; the affine weights and the layers still learn
    assert torch.equal(model.bn.running_mean, start["bn.running_mean"])
    assert torch.equal(model.bn.running_var, start["bn.running_var"])
    assert not torch.equal(model.bn.weight, start["bn.weight"]) and not torch.equal(model.fc.weight, start["fc.weight"])
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


def test_a_finetune_that_diverges_either_way_is_refused_with_its_reason():
    with pytest.raises(TrainingDiverged, match="with BatchNorm frozen; lower the learning rate"):
        finetune(Net(poison_always=True), data(), RECIPE, 0.25, CPU, seed=3, steps=6)


def test_a_finetune_does_not_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="does not checkpoint"):
        finetune(Net(), data(), RECIPE, 0.25, CPU, seed=3, state_path=tmp_path / "state.pt")
