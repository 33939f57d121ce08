"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): sampling, CERTIFY, PREDICT, confidence bounds.

g(x) = argmax_c P(f(x + e) = c), e ~ N(0, sigma^2 I). Noise is added to the unnormalised
input; normalisation is the model's first layer. Each example draws its noise from its
own generator seeded by (seed, example index, phase), so a certification is the same
whichever batch, batch size or shard the example lands in, and can be replayed sample for sample.
"""

import time

import torch
from scipy.stats import beta, binomtest, norm

from arqbench import runtime
from arqbench.contract import ABSTAIN, Certificate, SmoothingConfig  # noqa: F401 (the core's names for them)

# Noise phases: each estimate draws from its own stream, so no estimate reuses another's samples.
SELECTION, ESTIMATION, PREDICTION = 0, 1, 2  # Cohen's CERTIFY and PREDICT
RESELECTION, REESTIMATION = 3, 4  # a second, independent CERTIFY of the same example (IRS's fallback)
NOISE_CHUNK = 100  # noise is drawn per example in whole chunks of this many samples (on the CPU; see noise_chunk)
NOISE_SCHEME = 2  # bumped whenever the samples an example's seed gives change (caches of predictions key on it)


def lower_confidence_bound(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion with k of n successes."""
    return 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))


def upper_confidence_bound(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson upper bound on a binomial proportion with k of n successes."""
    return 1.0 if k == n else float(beta.ppf(1 - alpha, k + 1, n - k))


def certified_radius(sigma: float, p_lower: float) -> float:
    """R = sigma * Phi^-1(pA_lower); meaningful (positive) only for pA_lower > 0.5."""
    return float(sigma * norm.ppf(p_lower))


def max_certified_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest radius CERTIFY can return with ``n`` samples: every sample votes for cA, so
    pA_lower = alpha^(1/n) (the Clopper-Pearson bound at n of n) and R = sigma * Phi^-1(alpha^(1/n)).
    Not positive when n < log(alpha) / log(1/2): then every certificate abstains."""
    return certified_radius(sigma, alpha ** (1 / n))


def generator(device: torch.device, seed: int, index: int, phase: int) -> torch.Generator:
    """Example ``index``'s noise stream for ``phase``. Phases 0-2 keep their original seeds (published
    results replay sample for sample); later phases are seeded from 2^62 up, apart from every earlier seed."""
    gen = torch.Generator(device=device)
    if phase < RESELECTION:
        value = (seed * 1_000_003 + index * 3 + phase) % (2**63 - 1)
    else:
        value = 2**62 + ((seed * 1_000_003 + index) * 16 + phase) % 2**61
    gen.manual_seed(value)
    return gen


def generators(device: torch.device, seed: int, indices, phase: int) -> list[torch.Generator]:
    return [generator(device, seed, index, phase) for index in indices]


def noise_chunk(device: torch.device, example_numel: int = 0) -> int:
    """Samples drawn per generator call. NOISE_CHUNK on the CPU. On a GPU each call is a kernel launch, so
    at least 1000, and enough that a call draws about 2^20 numbers for small inputs (digits: 16384); GPU
    certificates are their own anyway (a CUDA generator's numbers are not the CPU's)."""
    if torch.device(device).type != "cuda":
        return NOISE_CHUNK
    return max(10 * NOISE_CHUNK, 2**20 // max(1, example_numel))


@torch.inference_mode()
def sample_predictions(model: torch.nn.Module, xs: torch.Tensor, num: int, sigma: float, batch_size: int,
                       gens: list[torch.Generator], precision: str = "fp32") -> torch.Tensor:
    """The base classifier's class for ``num`` noisy copies of each input in ``xs``: a (len(xs), num) tensor.

    Example e's noise is drawn from ``gens[e]`` in chunks of ``noise_chunk`` samples, always whole
    chunks, so its k-th sample is the same whatever ``num``, ``batch_size`` or the other examples
    are: certifications are independent of batching and can be replayed sample for sample.
    Forward batches pack the chunks of several examples, up to ``batch_size`` rows, and run at
    ``precision`` (``arqbench.runtime.precision``).
    """
    device = xs.device
    chunk = noise_chunk(device, xs[0].numel())
    out = torch.empty(len(xs) * num, dtype=torch.long, device=device)  # example-major: (len(xs), num) flat
    jobs = [(e, start, min(chunk, num - start)) for e in range(len(xs)) for start in range(0, num, chunk)]
    rows = min(max(batch_size, chunk), len(xs) * num)
    buffer = torch.empty((rows + chunk, *xs.shape[1:]), device=device, dtype=xs.dtype)
    nhwc = device.type == "cuda" and precision != "fp32" and xs.dim() == 4
    i = done = 0
    with runtime.precision(device, precision):
        while i < len(jobs):
            filled = 0
            while i < len(jobs) and (not filled or filled + jobs[i][2] <= batch_size):
                e, start, size = jobs[i]
                buffer[filled:filled + chunk].normal_(0.0, sigma, generator=gens[e])
                filled += size
                i += 1
            # jobs run in example-major order, so this batch is rows [done, done + filled) of the flat output;
            # its owners are computed on the device: no host-device copy, no synchronisation per batch
            owners = torch.arange(done, done + filled, device=device) // num
            noisy = buffer[:filled].add_(xs[owners])  # one add for the whole forward batch
            if nhwc:
                noisy = noisy.contiguous(memory_format=torch.channels_last)
            for lo in range(0, filled, batch_size):
                out[done + lo:done + min(lo + batch_size, filled)] = model(noisy[lo:lo + batch_size]).argmax(dim=1)
            done += filled
    return out.view(len(xs), num)


def class_counts(predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-row vote counts of a (examples, samples) prediction tensor: (examples, num_classes)."""
    counts = torch.zeros((predictions.shape[0], num_classes), dtype=torch.long, device=predictions.device)
    return counts.scatter_add_(1, predictions, torch.ones_like(predictions))


def certify_many(model: torch.nn.Module, batch: list[tuple[int, torch.Tensor, int]], config: SmoothingConfig,
                 num_classes: int, estimation: torch.Tensor | None = None,
                 candidates: torch.Tensor | None = None,
                 phases: tuple[int, int] = (SELECTION, ESTIMATION)) -> list[Certificate]:
    """Cohen's CERTIFY for each (index, x, label): n0 samples pick cA, n fresh samples bound pA from below.

    ``estimation`` may pass the (examples, n) estimation-phase predictions when the caller already drew them;
    ``candidates`` may give each example's cA when it was chosen independently of the estimation samples;
    ``phases`` names the noise streams of selection and estimation.
    """
    start = time.perf_counter()
    device = next(model.parameters()).device
    indices = [index for index, _, _ in batch]
    xs = torch.stack([x for _, x, _ in batch]).to(device)
    if candidates is None:
        selection = sample_predictions(model, xs, config.n0, config.sigma, config.batch_size,
                                       generators(device, config.seed, indices, phases[0]), config.precision)
        candidates = class_counts(selection, num_classes).argmax(dim=1)
    c_a = candidates
    if estimation is None:
        estimation = sample_predictions(model, xs, config.n, config.sigma, config.batch_size,
                                        generators(device, config.seed, indices, phases[1]), config.precision)
    n_a = (estimation == c_a[:, None]).sum(dim=1).tolist()
    seconds = (time.perf_counter() - start) / len(batch)
    certificates = []
    for (index, _, label), c, k in zip(batch, c_a.tolist(), n_a):
        p_lower = lower_confidence_bound(k, config.n, config.alpha)
        if p_lower < 0.5:  # the class it abstained on stays in the details
            certificates.append(Certificate(index, int(label), ABSTAIN, 0.0, p_lower, k, config.n, seconds,
                                            {"c_a": c}))
        else:
            certificates.append(Certificate(index, int(label), c, certified_radius(config.sigma, p_lower), p_lower, k,
                                            config.n, seconds))
    return certificates


def certify(model: torch.nn.Module, x: torch.Tensor, label: int, index: int, config: SmoothingConfig,
            num_classes: int) -> Certificate:
    """CERTIFY for one example."""
    return certify_many(model, [(index, x, label)], config, num_classes)[0]


def group_size(config: SmoothingConfig, num: int, cap: int = 256) -> int:
    """How many examples to certify together so a forward holds about ``batch_size`` noisy samples."""
    return max(1, min(cap, config.batch_size // max(1, num)))


def batched(iterable, size: int):
    """Lists of up to ``size`` consecutive items."""
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def predict(model: torch.nn.Module, x: torch.Tensor, index: int, config: SmoothingConfig, num_classes: int) -> int:
    """Cohen's PREDICT: the top class of n samples, or ABSTAIN if a two-sided binomial test of the
    top two counts has p-value above alpha."""
    device = next(model.parameters()).device
    predictions = sample_predictions(model, x.to(device)[None], config.n, config.sigma, config.batch_size,
                                     [generator(device, config.seed, index, PREDICTION)], config.precision)
    top2 = torch.topk(class_counts(predictions, num_classes)[0], 2)
    n_top, n_second = int(top2.values[0]), int(top2.values[1])
    if binomtest(n_top, n_top + n_second, 0.5).pvalue > config.alpha:
        return ABSTAIN
    return int(top2.indices[0])
