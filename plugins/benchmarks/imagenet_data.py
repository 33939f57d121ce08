"""ImageNet (ILSVRC-2012) as ImageFolder trees, labelled by the position of each wnid among all 1000.

Where: ``<data_root>/imagenet/val/<wnid>/*.JPEG``, or ``<data_root>/val/<wnid>/*.JPEG`` when
``--data-root`` points at the ImageNet folder itself (``imagenet/`` is looked at first). A ``train/``
folder beside ``val/`` is optional: when present it is the training split (RandomResizedCrop 224 +
flip); without it the protocol fine-tunes and searches on validation images outside the
certification subset. Evaluation: resize 256, center crop 224, inputs in [0, 1].

Class index = position of the folder's wnid in the sorted list of the 1000 ImageNet-1k wnids (the
order torchvision and timm models use), so a partial tree with a few classes keeps the true
indices. The list ships with timm (``timm/data/_info/imagenet_synsets.txt``); it is read from there
without importing timm.
"""

import copy
import importlib.util
import os
import warnings
from functools import lru_cache
from pathlib import Path

from PIL import Image
from torchvision import transforms
from torchvision.datasets import ImageFolder

from arqbench.errors import ArqbenchError, SkipBenchmark

from .paper import data_hint

SYNSETS = ("data", "_info", "imagenet_synsets.txt")  # inside the timm package
EXPECTED = "class folders <wnid>/*.JPEG, e.g. n01440764/"

EVAL = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
TRAIN = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                            transforms.ToTensor()])


@lru_cache(maxsize=1)
def wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in class-index order (sorted)."""
    spec = importlib.util.find_spec("timm")
    path = Path(spec.origin).parent.joinpath(*SYNSETS) if spec and spec.origin else None
    try:
        names = tuple(path.read_text().split())
    except (AttributeError, OSError):
        raise ArqbenchError(f"the list of ImageNet wnids ({'/'.join(('timm',) + SYNSETS)}) was not found; "
                            f"install timm (pip install timm)") from None
    if len(names) != 1000 or list(names) != sorted(set(names)):
        raise ArqbenchError(f"{path} is not the sorted list of 1000 ImageNet wnids; reinstall timm")
    return names


def read_image(path: str) -> Image.Image:
    """An RGB image; a file that is not one (damaged, truncated, another kind) is one clear error naming it."""
    try:
        with warnings.catch_warnings():  # e.g. PIL's decompression-bomb or EXIF warnings: the error says it all
            warnings.simplefilter("ignore")
            with open(path, "rb") as handle:
                image = Image.open(handle)
                return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ArqbenchError(f"{path} is not a readable image ({type(exc).__name__}: {exc}); replace or remove it, "
                            f"or sort the ImageNet tree again") from None


class WnidFolder(ImageFolder):
    """An ImageFolder whose class indices are the true ImageNet-1k indices of its wnid folders."""

    def __init__(self, root: str, transform=None):
        super().__init__(root, transform=transform, loader=read_image)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        index = {wnid: i for i, wnid in enumerate(wnids())}
        present = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
        unknown = [name for name in present if name not in index]
        if not present or unknown:
            found = f"folder '{unknown[0]}', not an ImageNet-1k wnid" if unknown else "no class folders"
            raise FileNotFoundError(f"{directory} holds {found}")
        return present, {wnid: index[wnid] for wnid in present}


def imagenet_dir(data_root: Path | None, name: str) -> Path:
    """The folder holding ``val/``: ``<root>/imagenet`` if it has one, else ``<root>``."""
    hint = data_hint("imagenet/val/<wnid>/*.JPEG")
    if data_root is None:
        raise SkipBenchmark(f"{name}: no data root for ImageNet (neither --data-root nor ARQBENCH_DATA is set); {hint}")
    for folder in (Path(data_root) / "imagenet", Path(data_root)):
        if (folder / "val").is_dir():
            return folder
    raise SkipBenchmark(f"{name}: ImageNet not found: neither {Path(data_root) / 'imagenet' / 'val'} nor "
                        f"{Path(data_root) / 'val'} is a directory (expected {EXPECTED}); {hint}")


def folder(path: Path, transform, name: str) -> WnidFolder:
    try:
        return WnidFolder(str(path), transform=transform)
    except FileNotFoundError as exc:
        raise SkipBenchmark(f"{name}: {path} is not an ImageNet folder ({str(exc).splitlines()[0][:160]}); "
                            f"expected {EXPECTED} (sort the flat official val/ into wnid folders first)") from None


def imagenet(data_root: Path | None, name: str) -> tuple[WnidFolder | None, WnidFolder, WnidFolder | None]:
    """(augmented train or None, val, un-augmented train or None)."""
    root = imagenet_dir(data_root, name)
    val = folder(root / "val", EVAL, name)
    if not (root / "train").is_dir():
        return None, val, None
    train = folder(root / "train", TRAIN, name)
    plain = copy.copy(train)  # same file list (scanned once), evaluation transform
    plain.transform = EVAL
    return train, val, plain
