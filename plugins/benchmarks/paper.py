"""What the ARQ paper's benchmarks share: Cohen et al.'s checkpoint layout and projection-shortcut ties.

Checkpoint conventions (used when ``--checkpoint`` is not given), the first file found is used::

    <data_root>/checkpoints/<benchmark>/noise_<sigma with 2 decimals>/checkpoint.pth.tar
    <data_root>/models/<released>/noise_<sigma with 2 decimals>/checkpoint.pth.tar

e.g. ``checkpoints/resnet110-cifar10/noise_0.25/checkpoint.pth.tar``, or Cohen et al.'s released
``models/`` folder unpacked under the data root as it is: ``models/cifar10/resnet110/noise_0.25/``,
``models/imagenet/resnet50/noise_0.50/`` (``released`` is the benchmark's ``<dataset>/<arch>``).
"""

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from arqbench.contract import Benchmark


def data_hint(what: str) -> str:
    """The end of every missing-data message: how to point arqbench at the data."""
    return f"pass --data-root DIR or set ARQBENCH_DATA to the directory holding {what}"


@dataclass
class PaperBenchmark(Benchmark):
    released: str = ""  # "<dataset>/<arch>" of Cohen et al.'s models/ folder layout

    def checkpoint_paths(self, sigma: float, data_root: Path | None) -> list[Path]:
        if data_root is None:
            return []
        noise = f"noise_{sigma:.2f}"
        paths = [Path(data_root) / "checkpoints" / self.name / noise / "checkpoint.pth.tar"]
        if self.released:
            paths.append(Path(data_root) / "models" / self.released / noise / "checkpoint.pth.tar")
        return paths

    def tied_layers(self, model: nn.Module) -> list[list[str]]:
        """[shortcut conv, first conv] of every residual block with a projection shortcut: both read the
        block's input, so they share its precision (torchvision/Cohen naming: ``downsample.0``, ``conv1``)."""
        return [[f"{name}.downsample.0", f"{name}.conv1"] for name, module in model.named_modules()
                if getattr(module, "downsample", None) is not None]
