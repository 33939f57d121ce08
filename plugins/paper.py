"""What the ARQ paper's benchmarks share: Cohen et al.'s checkpoint layout and projection-shortcut ties.

Checkpoint convention (used when ``--checkpoint`` is not given)::

    <data_root>/checkpoints/<benchmark>/noise_<sigma with 2 decimals>/checkpoint.pth.tar

e.g. ``checkpoints/resnet20-cifar10/noise_0.25/checkpoint.pth.tar``: Cohen et al.'s released
``models/<dataset>/<arch>/noise_<sigma>/`` folders can be copied (or linked) there unchanged.
"""

from pathlib import Path

from torch import nn

from arqbench.models.benchmark import Benchmark


def data_hint(what: str) -> str:
    """The end of every missing-data message: how to point arqbench at the data."""
    return f"pass --data-root DIR or set ARQBENCH_DATA to the directory holding {what}"


class PaperBenchmark(Benchmark):
    def checkpoint_path(self, sigma: float, data_root: Path | None) -> Path | None:
        if data_root is None:
            return None
        return Path(data_root) / "checkpoints" / self.name / f"noise_{sigma:.2f}" / "checkpoint.pth.tar"

    def tied_layers(self, model: nn.Module) -> list[list[str]]:
        """[shortcut conv, first conv] of every residual block with a projection shortcut: both read the
        block's input, so they share its precision (torchvision/Cohen naming: ``downsample.0``, ``conv1``)."""
        return [[f"{name}.downsample.0", f"{name}.conv1"] for name, module in model.named_modules()
                if getattr(module, "downsample", None) is not None]
