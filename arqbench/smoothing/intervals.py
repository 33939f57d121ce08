"""Sampling error of the protocol's numbers: intervals over test images, and paired comparisons.

ACR is a mean over the certification subset of r_i = (certified radius of image i if the smoothed
prediction is correct, else 0). Its 95% interval is Student's t interval of that mean over images:

    mean(r) ± t_{0.975, N-1} * sd(r) / sqrt(N)

With several seeds of one method, r_i is first averaged over the seeds (every seed certifies the same
images), so the interval is that of the seeds' mean ACR under the sampling of test images.

Every row of a table is certified on the same images with the same noise seeds, so two methods are
compared *paired*: the interval of mean(r_A - r_B) over the images both certified. It is far narrower
than the two unpaired intervals side by side, and a difference whose paired interval contains 0 is not
established: the two rows tie.
"""

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

from scipy.stats import t as student_t

CONFIDENCE = 0.95


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
