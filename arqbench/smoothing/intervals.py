"""Sampling error of the protocol's numbers: intervals over test images, and paired comparisons.

ACR is a mean over the certification subset of r_i = (certified radius of image i if the smoothed
prediction is correct, else 0). Its 95% interval is Student's t interval of that mean over images:

    mean(r) ± t_{0.975, N-1} * sd(r) / sqrt(N)

With several seeds of one method, r_i is first averaged over the seeds (every seed certifies the same
images), so the interval is that of the seeds' mean ACR under the sampling of test images.

Every row of a table is certified on the same images with the same noise seeds, so two methods are
compared *paired*: the interval of mean(r_A - r_B) over the images both certified. It is far narrower
than the two unpaired intervals side by side, and a difference whose paired interval contains 0 is not
established.

A table compares every pair of its rows (``all_pairs``): the paired t-test of r_A - r_B (the test whose
95% interval is the paired interval above: p < 0.05 exactly when that interval excludes 0), then Holm's
correction over the table's pairs, so that the chance of calling any equal pair different stays at 5%
however many rows the table has. A pair is significant when its Holm-adjusted p is at most 0.05.
"""

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

from scipy.stats import t as student_t
from scipy.stats import ttest_rel
from statsmodels.stats.multitest import multipletests

CONFIDENCE = 0.95
ROUNDING = 1e-12  # radii are O(sigma): differences below this are floating-point noise


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int  # images

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def __neg__(self) -> "Interval":
        return Interval(-self.mean, -self.high, -self.low, self.n)


def mean_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> Interval:
    """Student's t interval of the mean of ``values`` (one per image); degenerate for fewer than 2 values."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("no values to take an interval over")
    mean = math.fsum(xs) / n
    if n < 2:
        return Interval(mean, mean, mean, n)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(student_t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def per_image(certificates: Iterable[Mapping]) -> dict[int, float]:
    """Image index -> its ACR contribution (radius if correct, else 0), from certificate records."""
    out = {}
    for c in certificates:
        correct = c["prediction"] == c["label"]
        out[int(c["index"])] = float(c["radius"]) if correct else 0.0
    return out


def seed_mean(runs: Iterable[Mapping[int, float]]) -> dict[int, float]:
    """Per-image values averaged over seeds, on the images every seed certified."""
    runs = list(runs)
    if not runs:
        return {}
    common = set(runs[0]).intersection(*runs[1:])
    return {i: math.fsum(r[i] for r in runs) / len(runs) for i in sorted(common)}


def paired_difference(a: Mapping[int, float], b: Mapping[int, float],
                      confidence: float = CONFIDENCE) -> Interval | None:
    """Interval of mean(a_i - b_i) over the images both certified; None when they share none."""
    common = sorted(set(a) & set(b))
    if not common:
        return None
    return mean_interval([a[i] - b[i] for i in common], confidence)


@dataclass(frozen=True)
class Comparison:
    """Two rows compared paired: ``difference`` is the interval of mean(r_a - r_b) over their common images."""

    a: str
    b: str
    difference: Interval
    p: float  # two-sided paired t-test
    p_holm: float  # Holm-adjusted over the table's pairs
    significant: bool  # p_holm <= 1 - CONFIDENCE

    def flipped(self) -> "Comparison":
        """The same comparison as b against a."""
        return Comparison(self.b, self.a, -self.difference, self.p, self.p_holm, self.significant)


def paired_p(a: Mapping[int, float], b: Mapping[int, float]) -> float:
    """Two-sided p of the paired t-test of a_i - b_i over the images both certified (1 when fewer than two
    images or a radius that is not a number, as no difference is established; for a difference constant up
    to rounding, 1 if it is 0 and 0 otherwise, where t is 0/0 or infinite)."""
    common = sorted(set(a) & set(b))
    xs, ys = [a[i] for i in common], [b[i] for i in common]
    diffs = [x - y for x, y in zip(xs, ys)]
    if len(common) < 2 or not all(map(math.isfinite, diffs)):
        return 1.0
    if max(diffs) - min(diffs) <= ROUNDING:
        return 1.0 if abs(diffs[0]) <= ROUNDING else 0.0
    return float(ttest_rel(xs, ys).pvalue)


def all_pairs(samples: Mapping[str, Mapping[int, float]], confidence: float = CONFIDENCE) -> list[Comparison]:
    """Every pair (a before b in ``samples``' order) that shares images, compared paired, with Holm's
    correction over all of them (module docstring)."""
    names = list(samples)
    pairs = [(a, b, paired_difference(samples[a], samples[b], confidence))
             for i, a in enumerate(names) for b in names[i + 1:]]
    pairs = [(a, b, d) for a, b, d in pairs if d is not None]
    if not pairs:
        return []
    raw = [paired_p(samples[a], samples[b]) for a, b, _ in pairs]
    reject, adjusted, _, _ = multipletests(raw, alpha=1 - confidence, method="holm")
    return [Comparison(a, b, d, p, float(q), bool(r))
            for (a, b, d), p, q, r in zip(pairs, raw, adjusted, reject)]
