"""Benchmarks ``resnet20-cifar10`` and ``resnet110-cifar10``: He et al. (2016)'s CIFAR ResNets on CIFAR-10.

ResNet-20 is the ARQ paper's first benchmark; ResNet-110 is the network of every released CIFAR-10
smoothing checkpoint (Cohen et al.'s ``models/cifar10/resnet110/noise_<sigma>/``, SmoothAdv, MACER,
consistency regularisation).

ResNet-20: a 3x3 stem (16), 3 stages x 3 basic blocks of widths 16/32/64 (stride 2 entering stages 2
and 3), global average pooling and fc(10); 272,474 parameters. Shortcuts use **option B**: a 1x1 conv +
BN projection where the shape changes, identity elsewhere. This is Cohen et al.'s ``cifar_resnet20``
(``archs/cifar_resnet.py``, after bearpaw/pytorch-classification), with the same parameter names,
so their ``checkpoint.pth.tar`` files load unchanged (keys ``1.conv1.weight``, ...). Option A (zero-
padded identity shortcuts, He et al.'s CIFAR choice) would have 269,722 parameters and 40.55M MACs;
option B has 40.81M (the two 1x1 projections add 2 x 131,072). ResNet-110 (18 blocks per stage) is Cohen
et al.'s ``cifar_resnet110``, same construction and names: 1,730,714 parameters, 253.15M MACs.

Input normalisation: networks arqbench trains use CIFAR-10's per-channel mean and std (``cifar10``);
Cohen et al.'s code (and the papers built on it) used std (0.2023, 0.1994, 0.2010) (``cohen``), which
their checkpoints do not record, so a checkpoint in their layout is given their constants.

Data: ``<data_root>/cifar-10-batches-py/`` (see ``cifar_data``); base models: ``--checkpoint``,
``arqbench train``, or the convention in ``paper``.
"""

from dataclasses import dataclass
from pathlib import Path

from torch import nn
from torch.nn import functional as F

from arqbench.contract import Splits, TrainRecipe
from arqbench.hookspecs import hookimpl
from arqbench.toolkit import Normalization, Normalized

from .cifar_data import cifar10
from .paper import PaperBenchmark

CIFAR10 = Normalization(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))  # the training set's
COHEN = Normalization(mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010))  # Cohen et al.'s datasets.py


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None  # option B: a projection only where the shape changes
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs; n=3 is ResNet-20, n=18 ResNet-110."""

    def __init__(self, blocks: int = 3, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self.stage(16, 16, blocks, 1)
        self.layer2 = self.stage(16, 32, blocks, 2)
        self.layer3 = self.stage(32, 64, blocks, 2)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def stage(c_in: int, c_out: int, blocks: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(c_in, c_out, stride), *[BasicBlock(c_out, c_out) for _ in range(blocks - 1)])

    def forward(self, x):
        out = self.layer3(self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x))))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


@dataclass
class Cifar10(PaperBenchmark):
    blocks: int = 3  # basic blocks per stage: depth 6 * blocks + 2

    def build_model(self) -> nn.Module:
        return Normalized(CifarResNet(self.blocks, self.num_classes), *CIFAR10)

    def splits(self, data_root: Path | None) -> Splits:
        train, test = cifar10(data_root, self.name)
        return Splits(train=train, test=test, train_eval=train.without_augmentation())


def cifar_benchmark(depth: int) -> Cifar10:
    return Cifar10(
        name=f"resnet{depth}-cifar10",
        num_classes=10,
        input_shape=(3, 32, 32),
        radii=(0.25, 0.5, 0.75, 1.0, 1.25, 1.5),
        recipe=TrainRecipe(epochs=90, lr=0.1, batch_size=256, lr_step=30),  # Cohen et al.'s train.py defaults
        finetune=TrainRecipe(epochs=1, lr=0.01, batch_size=256, lr_step=1000),
        defaults={"n0": 100, "n": 100_000, "alpha": 0.001, "test_images": 500, "batch_size": 1000},
        train_on_first_use=False,
        search_images=500,
        architecture=f"cifar_resnet{depth}",
        normalizations={"cohen": COHEN, "cifar10": CIFAR10},
        layout_normalizations={"cohen": "cohen"},
        released=f"cifar10/resnet{depth}",
        data_sizes={"train": 50_000, "test": 10_000},
        blocks=(depth - 2) // 6,
    )


def resnet20_cifar10() -> Cifar10:
    return cifar_benchmark(20)


def resnet110_cifar10() -> Cifar10:
    return cifar_benchmark(110)


@hookimpl
def register_benchmark(register):
    register("resnet20-cifar10", resnet20_cifar10)
    register("resnet110-cifar10", resnet110_cifar10)
