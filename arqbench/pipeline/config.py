"""The protocol settings of a run: global defaults < benchmark defaults < preset < command-line flags."""

import math
from dataclasses import asdict, dataclass, field, fields

from arqbench.errors import ArqbenchError
from arqbench.models.benchmark import Benchmark
from arqbench.models.data import SUBSETS

DEFAULTS = {
    "n0": 100, "n": 100_000, "alpha": 0.001, "test_images": 500, "batch_size": 1000, "subset": "random",
    "quantizer": "linear", "cost_model": "bitops", "certifier": "rs",
    "search_activations": False, "keep_ends": True, "episodes": 600, "np": 0.1,
}
PRESETS = {
    # Cohen et al.'s certification and HAQ's episode count: what the ARQ paper reports.
    "paper": {"n0": 100, "n": 100_000, "alpha": 0.001, "test_images": 500, "episodes": 600},
}


@dataclass(frozen=True)
class Protocol:
    n0: int
    n: int
    alpha: float
    test_images: int
    subset: str  # which test images are certified (arqbench.models.data.SUBSETS): random, cohen, cohen-imagenet
    batch_size: int  # noisy samples per forward during certification
    finetune_epochs: int
    quantizer: str
    cost_model: str
    certifier: str
    search_activations: bool
    keep_ends: bool  # first and last layer held at 8 bits
    episodes: int  # RL search length
    np: float  # incremental certification samples, as a fraction of n
    options: dict = field(default_factory=dict)  # per-method options: {method: {key: value}}

    def as_dict(self) -> dict:
        return asdict(self)


def resolve(benchmark: Benchmark, overrides: dict, preset: str | None = None) -> Protocol:
    values = dict(DEFAULTS, finetune_epochs=benchmark.finetune.epochs)
    values.update(benchmark.defaults)
    if preset:
        if preset not in PRESETS:
            raise ArqbenchError(f"unknown preset '{preset}'; available: {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    values.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in fields(Protocol)}
    protocol = Protocol(**{k: v for k, v in values.items() if k in names})
    check(protocol)
    return protocol


def check(p: Protocol) -> None:
    for name in ("n0", "n", "test_images", "batch_size", "episodes"):
        if getattr(p, name) < 1:
            raise ArqbenchError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(p, name)}")
    if not (0 < p.alpha < 0.5) or math.isnan(p.alpha):
        raise ArqbenchError(f"--alpha must be in (0, 0.5), got {p.alpha}")
    if p.subset not in SUBSETS:
        raise ArqbenchError(f"--subset must be one of {', '.join(SUBSETS)}, got '{p.subset}'")
    if not (0 < p.np <= 1) or math.isnan(p.np):
        raise ArqbenchError(f"--np must be a fraction of n in (0, 1], got {p.np}")
    if p.finetune_epochs < 0:
        raise ArqbenchError(f"--finetune-epochs must be >= 0, got {p.finetune_epochs}")
