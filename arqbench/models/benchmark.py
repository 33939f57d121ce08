"""What a benchmark plugin provides: a model, its data, its training recipe and its protocol defaults."""

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn
from torch.utils.data import Dataset

from arqbench.models.normalize import Normalization


@dataclass(frozen=True)
class TrainRecipe:
    """Noise-augmented SGD with step decay (Cohen et al.'s recipe, scaled per benchmark)."""

    epochs: int
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 256
    lr_step: int = 30  # epochs between lr decays
    lr_gamma: float = 0.1


@dataclass
class Splits:
    """``train`` may be None (e.g. ImageNet with only ``val/``): the protocol then fine-tunes and searches
    on test images outside the certification subset. ``train_eval``: the training images without
    augmentation (same order), used for the search split; None when ``train`` does not augment."""

    train: Dataset | None
    test: Dataset
    train_eval: Dataset | None = None


@dataclass
class Benchmark:
    """Base class for benchmark plugins; subclasses override ``build_model`` and ``splits``."""

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    radii: tuple[float, ...]
    recipe: TrainRecipe
    finetune: TrainRecipe
    # protocol defaults for this benchmark (n, n0, test_images, ...) and plugin options under "options":
    # {plugin name, or "*" for every plugin taking the key: {key: value}}
    defaults: dict = field(default_factory=dict)
    train_on_first_use: bool = False  # small benchmarks train their base model when none is cached
    search_images: int = 500  # size of the held-out search split carved from the training data
    architecture: str = ""  # recorded with checkpoints; a checkpoint of another architecture is refused
    # Named input normalisations a checkpoint's network may have been trained with (``--normalization NAME``),
    # and the one each checkpoint layout ("cohen", "state_dict"; see ``arqbench.models.checkpoints``) implies
    # for this benchmark. A checkpoint that records none and whose layout implies none is refused.
    normalizations: dict[str, Normalization] = field(default_factory=dict)
    layout_normalizations: dict[str, str] = field(default_factory=dict)
    # Optional: the number of images in the full dataset's splits, {"train": N, "test": N} (train may be
    # absent), for estimates made where the data is not (``arqbench run --dry-run``).
    data_sizes: dict[str, int] = field(default_factory=dict)
    # Optional: the CPU thread count this benchmark's work runs fastest at (torch.set_num_threads), chosen by
    # measurement (benchmarks/threads.py); None: torch's default. ``--threads`` overrides it.
    threads: int | None = None

    def build_model(self) -> nn.Module:
        """A freshly initialised model with input normalisation inside (``arqbench.models.normalize.Normalized``)."""
        raise NotImplementedError

    def splits(self, data_root: Path | None) -> Splits:
        """Load the data (inputs in [0, 1]); raise ``SkipBenchmark`` naming the path read when it is missing."""
        raise NotImplementedError

    def checkpoint_paths(self, sigma: float, data_root: Path | None) -> list[Path]:
        """Where a user's checkpoint for ``sigma`` is looked for by convention, first found first."""
        return []

    def tied_layers(self, model: nn.Module) -> list[list[str]]:
        """Groups of layer names that must share one precision (e.g. a shortcut and its block's first conv)."""
        return []
