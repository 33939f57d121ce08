"""The fixed splits of the protocol: certification subset, search split, fine-tune data, calibration batches."""

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from arqbench.errors import ArqbenchError
from arqbench.models.benchmark import Splits

SPLIT_SEED = 20190208  # fixed for every run, so all methods see the same images
# Certification subsets (the protocol's ``subset``): a seeded random one, or every k-th test image from the
# first, as Cohen et al.'s certify.py --skip k (20 on CIFAR-10, 100 on ImageNet: 500 images each).
SUBSETS = {"random": None, "cohen": 20, "cohen-imagenet": 100}


def permutation(length: int, seed: int = SPLIT_SEED) -> list[int]:
    return torch.randperm(length, generator=torch.Generator().manual_seed(seed)).tolist()


@dataclass
class ProtocolData:
    finetune: Dataset  # fine-tuning and calibration
    search: Dataset  # a search method's held-out split; never the certification subset
    test: Dataset  # the whole test split (clean accuracy)
    certify: Subset  # the fixed certification subset of ``test``
    workers: int = 0  # DataLoader worker processes for the splits (0: load in the main process)

    @classmethod
    def from_splits(cls, splits: Splits, test_images: int, search_images: int, subset: str = "random",
                    workers: int = 0, name: str = "this benchmark") -> "ProtocolData":
        """``test_images`` of the ``subset`` (a name in ``SUBSETS``) are certified, in test-set order for Cohen's;
        more than the data holds is an error, never clamped."""
        test_order = permutation(len(splits.test))
        skip = SUBSETS[subset]
        chosen = test_order if skip is None else list(range(0, len(splits.test), skip))
        check_test_images(test_images, len(chosen), splits, subset, name)
        certify = Subset(splits.test, chosen[:test_images])
        if splits.train is not None:
            order = permutation(len(splits.train), SPLIT_SEED + 1)
            held = min(search_images, len(order) // 5)
            plain = splits.train if splits.train_eval is None else splits.train_eval
            search = Subset(plain, order[:held])  # never augmented
            return cls(Subset(splits.train, order[held:]), search, splits.test, certify, workers)
        certified = set(certify.indices)  # no training data: use test images outside the subset
        rest = [i for i in test_order if i not in certified]
        held = max(1, len(rest) // 2)
        return cls(Subset(splits.test, rest[held:] or rest), Subset(splits.test, rest[:held]), splits.test, certify,
                   workers)


def check_test_images(test_images: int, available: int, splits: Splits, subset: str, name: str) -> None:
    """``available``: the images of the subset's order. Without a training split, a test image at least stays
    out of the certification subset, to fine-tune and search on."""
    total = len(splits.test)
    most = available if splits.train is not None else min(available, total - 1)
    if test_images <= most:
        return
    held = "" if available == total else f", {available} of them in the '{subset}' subset"
    why = "" if splits.train is not None else (", and without a training split one must stay out of the "
                                               "certification subset to fine-tune and search on")
    fix = f"pass --test-images {most} or fewer" if most >= 1 else "provide more test images"
    raise ArqbenchError(f"--test-images {test_images} is more than {name} has: its test split holds {total} "
                        f"images{held}{why}; {fix}")


def loader(dataset: Dataset, batch_size: int, device: torch.device, shuffle: bool = False, seed: int = 0,
           workers: int = 0) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=gen, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0)


def examples(subset: Subset):
    """(index in the test split, input, label) for each image of a certification subset."""
    for index in subset.indices:
        x, y = subset.dataset[index]
        yield index, x, int(y)


def noisy_batches(dataset: Dataset, sigma: float, batches: int, batch_size: int, device: torch.device, seed: int = 0,
                  workers: int = 0):
    """A few batches of noise-augmented inputs (the distribution the smoothed model sees), e.g. for calibration."""
    gen = torch.Generator().manual_seed(seed)
    data = loader(dataset, batch_size, device, shuffle=True, seed=seed, workers=workers)
    for i, (x, _) in enumerate(data):
        if i >= batches:
            break
        yield (x + sigma * torch.randn(x.shape, generator=gen)).to(device)
