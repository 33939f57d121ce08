"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): sampling, CERTIFY, PREDICT, confidence bounds.

g(x) = argmax_c P(f(x + e) = c), e ~ N(0, sigma^2 I). Noise is added to the unnormalised
input; normalisation is the model's first layer. Each example draws its noise from its
own generator seeded by (seed, example index, phase), so a certification is the same
whichever batch or shard the example lands in, and can be replayed sample for sample.
"""

import time
from dataclasses import asdict, dataclass

import torch
from scipy.stats import beta, binomtest, norm

ABSTAIN = -1
SELECTION, ESTIMATION, PREDICTION = 0, 1, 2


@dataclass(frozen=True)
class SmoothingConfig:
    sigma: float
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch_size: int = 1000
    seed: int = 0


@dataclass
class Certificate:
    index: int
    label: int
    prediction: int  # ABSTAIN (-1) when the smoothed classifier abstains
    radius: float  # 0.0 when abstaining
    p_lower: float
    count: int  # samples (of ``n``) that voted for the prediction
    n: int
    seconds: float

    @property
    def correct(self) -> bool:
        return self.prediction == self.label

    def as_dict(self) -> dict:
        return asdict(self)


def lower_confidence_bound(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion with k of n successes."""
    return 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))


def upper_confidence_bound(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson upper bound on a binomial proportion with k of n successes."""
    return 1.0 if k == n else float(beta.ppf(1 - alpha, k + 1, n - k))


def certified_radius(sigma: float, p_lower: float) -> float:
    """R = sigma * Phi^-1(pA_lower); meaningful (positive) only for pA_lower > 0.5."""
    return float(sigma * norm.ppf(p_lower))


def generator(device: torch.device, seed: int, index: int, phase: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed((seed * 1_000_003 + index * 3 + phase) % (2**63 - 1))
    return gen


@torch.inference_mode()
def sample_predictions(model: torch.nn.Module, x: torch.Tensor, num: int, sigma: float, batch_size: int,
                       gen: torch.Generator) -> torch.Tensor:
    """The base classifier's predicted class on ``num`` noisy copies of ``x``, as a tensor on x's device.

    Noise is drawn batch by batch (sizes batch_size, ..., remainder), so the first k samples of
    two calls with the same generator and batch size are identical.
    """
    out = torch.empty(num, dtype=torch.long, device=x.device)
    buffer = torch.empty((min(batch_size, num), *x.shape), device=x.device, dtype=x.dtype)
    done = 0
    while done < num:
        size = min(batch_size, num - done)
        noisy = buffer[:size].normal_(0.0, sigma, generator=gen).add_(x)
        out[done:done + size] = model(noisy).argmax(dim=1)
        done += size
    return out


def class_counts(predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.bincount(predictions, minlength=num_classes)


def certify(model: torch.nn.Module, x: torch.Tensor, label: int, index: int, config: SmoothingConfig,
            num_classes: int, estimation: torch.Tensor | None = None) -> Certificate:
    """Cohen's CERTIFY: n0 samples pick cA, n fresh samples bound pA from below.

    ``estimation`` may pass the n estimation-phase predictions when the caller already drew them.
    """
    start = time.perf_counter()
    device = next(model.parameters()).device
    x = x.to(device)
    selection = sample_predictions(model, x, config.n0, config.sigma, config.batch_size,
                                   generator(device, config.seed, index, SELECTION))
    c_a = int(class_counts(selection, num_classes).argmax())
    if estimation is None:
        estimation = sample_predictions(model, x, config.n, config.sigma, config.batch_size,
                                        generator(device, config.seed, index, ESTIMATION))
    n_a = int((estimation == c_a).sum())
    p_lower = lower_confidence_bound(n_a, config.n, config.alpha)
    if p_lower < 0.5:
        prediction, radius = ABSTAIN, 0.0
    else:
        prediction, radius = c_a, certified_radius(config.sigma, p_lower)
    return Certificate(index, int(label), prediction, radius, p_lower, n_a, config.n, time.perf_counter() - start)


def predict(model: torch.nn.Module, x: torch.Tensor, index: int, config: SmoothingConfig, num_classes: int) -> int:
    """Cohen's PREDICT: the top class of n samples, or ABSTAIN if a two-sided binomial test of the
    top two counts has p-value above alpha."""
    device = next(model.parameters()).device
    predictions = sample_predictions(model, x.to(device), config.n, config.sigma, config.batch_size,
                                     generator(device, config.seed, index, PREDICTION))
    counts = class_counts(predictions, num_classes)
    top2 = torch.topk(counts, 2)
    n_top, n_second = int(top2.values[0]), int(top2.values[1])
    if binomtest(n_top, n_top + n_second, 0.5).pvalue > config.alpha:
        return ABSTAIN
    return int(top2.indices[0])
