"""Input normalisation as the model's first layer, so noise is added in input space (DESIGN §6).

A network computes its function only with the normalisation it was trained with, and a state_dict does
not always carry it (Cohen et al.'s ``NormalizeLayer`` keeps its constants outside the state_dict). So the
constants are part of the model here: persistent buffers of ``Normalized`` (in its state_dict and its
fingerprint), recorded in arqbench's checkpoints, and chosen for other checkpoints by ``choose``.
"""

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from arqbench.errors import ArqbenchError


class Normalization(NamedTuple):
    """Per-channel ``(x - mean) / std``; ``Normalized(net, *normalization)`` builds the wrapper."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, mean: torch.Tensor, std: torch.Tensor) -> "Normalization":
        """From float tensors, each value as the shortest decimal that gives back the same float32."""
        def floats(t):
            return tuple(float(str(v)) for v in t.detach().cpu().flatten().numpy().astype(np.float32))
        return cls(floats(mean), floats(std))

    @classmethod
    def parse(cls, text: str) -> "Normalization":
        """``MEAN,MEAN,MEAN/STD,STD,STD`` (one value per input channel)."""
        head, sep, tail = text.partition("/")
        try:
            mean, std = tuple(float(v) for v in head.split(",")), tuple(float(v) for v in tail.split(","))
        except ValueError:
            mean, std = (), ()
        if not sep or not mean or len(mean) != len(std) or not all(s > 0 for s in std):
            raise ArqbenchError(f"--normalization expects a name or MEAN,...,MEAN/STD,...,STD with one positive "
                                f"std per channel (e.g. 0.4914,0.4822,0.4465/0.2023,0.1994,0.2010), got '{text}'")
        return cls(mean, std)

    def describe(self) -> str:
        return f"mean {','.join(f'{v:g}' for v in self.mean)} std {','.join(f'{v:g}' for v in self.std)}"


class Normalized(nn.Module):
    """``net((x - mean) / std)``: the wrapper every benchmark model uses; policies name layers ``net.*``."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.net = net

    @property
    def normalization(self) -> Normalization:
        return Normalization.of(self.mean, self.std)

    def normalize_with(self, normalization: Normalization) -> None:
        """Use other constants (those a loaded checkpoint was trained with)."""
        if len(normalization.mean) != self.mean.numel():
            raise ArqbenchError(f"normalisation {normalization.describe()} has {len(normalization.mean)} channels, "
                                f"the model takes {self.mean.numel()}: give --normalization one mean and std each")
        self.mean.copy_(torch.tensor(normalization.mean).view_as(self.mean))
        self.std.copy_(torch.tensor(normalization.std).view_as(self.std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def choose(given: str | None, recorded: Normalization | None, layout: str, named: dict[str, Normalization],
           layouts: dict[str, str], what: str) -> tuple[Normalization | None, str]:
    """The normalisation a checkpoint's weights were trained with, and how it was determined.

    In order: ``given`` (``--normalization``: a name in ``named`` or numbers), the one ``recorded`` in the
    checkpoint, the one the checkpoint's ``layout`` implies for this benchmark (``layouts``: layout -> name);
    None for arqbench's own checkpoints from before normalisation was recorded (they were trained with the
    model's built-in one). Otherwise the checkpoint is refused, naming what to pass.
    """
    if given is not None:
        if given in named:
            return named[given], f"--normalization {given}"
        return Normalization.parse(given), "--normalization"
    if recorded is not None:
        return recorded, "recorded in the checkpoint"
    if layout in layouts:
        return named[layouts[layout]], f"{layouts[layout]} (implied by the checkpoint's {layout} layout)"
    if layout == "arqbench":
        return None, "arqbench's built-in"
    choices = " or ".join(f"{name} ({n.describe()})" for name, n in named.items())
    kind = "a plain state_dict" if layout == "state_dict" else f"{layout} layout"
    raise ArqbenchError(f"{what} ({kind}) does not say which input normalisation its network was trained with; "
                        f"pass --normalization {choices + ', or ' if choices else ''}MEAN,.../STD,...")
