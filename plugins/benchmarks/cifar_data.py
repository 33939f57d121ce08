"""CIFAR-10 from the official python layout, read by our own reader (torchvision's checks md5 sums).

``<data_root>/cifar-10-batches-py/`` holds ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``,
each a pickle of a dict with ``data`` (uint8, N x 3072, channel-major 32x32 images) and ``labels``.
Keys may be bytes or str (how the official Python 2 pickles read depends on the encoding). Only
numpy arrays and plain data are unpickled. Images stay uint8 in memory and come out as float tensors in [0, 1].
"""

import pickle
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from arqbench.errors import SkipBenchmark

from .paper import data_hint

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
EXPECTED = "data_batch_1..5 and test_batch from cifar-10-python.tar.gz"


class CifarImages(Dataset):
    """(image in [0, 1] of shape 3x32x32, label); ``augment``: random crop 32 with padding 4 and a horizontal flip."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: bool = False):
        self.images, self.labels, self.augment = images, labels, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        x = self.images[index].float() / 255
        if self.augment:
            x = random_crop_flip(x)
        return x, int(self.labels[index])

    def without_augmentation(self) -> "CifarImages":
        """The same images un-augmented (for evaluating on training images, e.g. a search split)."""
        return CifarImages(self.images, self.labels)


def random_crop_flip(x: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """The standard CIFAR augmentation, drawn from torch's global generator (seeded per epoch by training)."""
    size = x.shape[-1]
    top, left = torch.randint(0, 2 * padding + 1, (2,)).tolist()
    x = F.pad(x, (padding,) * 4)[:, top:top + size, left:left + size]
    return x.flip(-1) if torch.rand(()) < 0.5 else x


class ArraysOnly(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only: a batch file cannot run code when it is read."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("_codecs", "encode"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}  # pickle protocol 5

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_batch(path: Path, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One pickle batch as (uint8 images N x 3 x 32 x 32, int64 labels); anything else skips the benchmark."""
    try:
        with open(path, "rb") as handle:
            entry = ArraysOnly(handle, encoding="latin1").load()
        data = np.asarray(_field(entry, "data"))
        labels = np.asarray(_field(entry, "labels"))
    except FileNotFoundError:
        raise SkipBenchmark(f"{name}: CIFAR-10 not found: {path} does not exist (expected {EXPECTED} in "
                            f"{path.parent}); {data_hint(FOLDER + '/')}") from None
    except Exception as exc:
        raise SkipBenchmark(f"{name}: {path} is not a CIFAR-10 python batch ({type(exc).__name__}: "
                            f"{str(exc)[:80]}); expected a pickled dict with data and labels; "
                            f"re-extract cifar-10-python.tar.gz there") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),) \
            or len(data) == 0 or labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() > 9:
        raise SkipBenchmark(f"{name}: {path} is not a CIFAR-10 python batch (data {data.dtype} {data.shape}, "
                            f"{labels.size} labels of {labels.dtype}); expected uint8 N x 3072 and N integer labels "
                            f"in 0..9; re-extract cifar-10-python.tar.gz there")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels.astype(np.int64))


def _field(entry, key: str):
    if not isinstance(entry, dict):
        raise TypeError(f"holds a {type(entry).__name__}, not a dict")
    for k in (key.encode(), key):
        if k in entry:
            return entry[k]
    raise KeyError(f"no '{key}' entry")


def cifar10(data_root: Path | None, name: str) -> tuple[CifarImages, CifarImages]:
    """(augmented training set, test set); raises ``SkipBenchmark`` naming the path read when they are missing."""
    if data_root is None:
        raise SkipBenchmark(f"{name}: no data root for CIFAR-10 (neither --data-root nor ARQBENCH_DATA is set); "
                            f"{data_hint(FOLDER + '/')}")
    folder = Path(data_root) / FOLDER
    if not folder.is_dir():
        raise SkipBenchmark(f"{name}: CIFAR-10 not found: {folder} is not a directory (expected {EXPECTED}); "
                            f"{data_hint(FOLDER + '/')}")
    train = [read_batch(folder / f, name) for f in TRAIN_FILES]
    test = read_batch(folder / TEST_FILE, name)
    images, labels = torch.cat([x for x, _ in train]), torch.cat([y for _, y in train])
    return CifarImages(images, labels, augment=True), CifarImages(*test)
