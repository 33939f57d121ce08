"""Benchmarks ``resnet50-imagenet`` and ``mobilenetv2-imagenet``: torchvision's ResNet-50 and MobileNetV2 on ImageNet.

The networks are torchvision's definitions with random weights (``resnet50(weights=None)``,
``mobilenet_v2(weights=None)``) behind ImageNet input normalisation, so torchvision state_dicts
and Cohen et al.'s ResNet-50 checkpoints (keys ``1.module.*``: their ``get_architecture`` wraps the
ImageNet model in DataParallel) load unchanged. Both use the ImageNet mean and std torchvision's
models were trained with, which are also Cohen et al.'s ImageNet constants (``datasets.py``), so a
plain state_dict and a checkpoint in Cohen's layout are given them.

Data: ``imagenet/val/`` (and optionally ``train/``) under ``--data-root`` (see ``imagenet_data``);
base models: ``--checkpoint``, ``arqbench train``, or the convention in ``paper``.
"""

from pathlib import Path

import torchvision
from torch import nn

from arqbench.contract import Splits, TrainRecipe
from arqbench.hookspecs import hookimpl
from arqbench.toolkit import Normalization, Normalized

from .imagenet_data import imagenet
from .paper import PaperBenchmark

IMAGENET = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
NETWORKS = {"resnet50": torchvision.models.resnet50, "mobilenet_v2": torchvision.models.mobilenet_v2}


class ImageNet(PaperBenchmark):
    def build_model(self) -> nn.Module:
        return Normalized(NETWORKS[self.architecture](weights=None, num_classes=self.num_classes), *IMAGENET)

    def splits(self, data_root: Path | None) -> Splits:
        train, val, train_eval = imagenet(data_root, self.name)
        return Splits(train=train, test=val, train_eval=train_eval)


def imagenet_benchmark(name: str, architecture: str, released: str) -> ImageNet:
    return ImageNet(
        name=name,
        num_classes=1000,
        input_shape=(3, 224, 224),
        radii=(0.5, 1.0, 1.5, 2.0, 2.5, 3.0),
        recipe=TrainRecipe(epochs=90, lr=0.1, batch_size=256, lr_step=30),  # Cohen et al.'s train.py defaults
        finetune=TrainRecipe(epochs=1, lr=0.001, batch_size=256, lr_step=1000),
        defaults={"n0": 100, "n": 100_000, "alpha": 0.001, "test_images": 500, "batch_size": 400,
                  "options": {"irs": {"gamma": 0.995}}},  # the IRS paper's threshold on ImageNet
        train_on_first_use=False,
        search_images=500,
        architecture=architecture,
        normalizations={"imagenet": IMAGENET},
        layout_normalizations={"cohen": "imagenet", "state_dict": "imagenet"},
        released=released,
        data_sizes={"train": 1_281_167, "test": 50_000},  # ILSVRC2012 train and val
    )


def resnet50_imagenet() -> ImageNet:
    return imagenet_benchmark("resnet50-imagenet", "resnet50", "imagenet/resnet50")


def mobilenetv2_imagenet() -> ImageNet:
    return imagenet_benchmark("mobilenetv2-imagenet", "mobilenet_v2", "imagenet/mobilenet_v2")


@hookimpl
def register_benchmark(register):
    register("resnet50-imagenet", resnet50_imagenet)
    register("mobilenetv2-imagenet", mobilenetv2_imagenet)
