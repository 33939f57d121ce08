"""Certificates of a set of examples, as ``arqbench.certify`` returns them: a sequence with the protocol's
summary and a pandas view."""

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from arqbench.smoothing.core import ABSTAIN, Certificate, SmoothingConfig
from arqbench.smoothing.intervals import mean_interval
from arqbench.smoothing.metrics import summarize

RADII = (0.25, 0.5, 0.75, 1.0)


@dataclass
class Certificates(Sequence):
    """One ``Certificate`` per example, in input order (index, label, prediction (-1: abstain), radius, p_lower,
    count, n, seconds, details), and the smoothing settings and certifier they were made with. Each holds
    with probability at least 1 - alpha (the certifier's level, e.g. alpha + alpha_zeta for ``irs``)."""

    items: list[Certificate]
    config: SmoothingConfig
    certifier: str  # the certifier plugin that made them

    def __getitem__(self, i):
        return self.items[i]

    def __len__(self) -> int:
        return len(self.items)

    def summary(self, radii=RADII) -> dict:
        """Smoothed accuracy, certified accuracy at each of ``radii`` (keys ``f"{r:g}"``), ACR with its 95%
        interval over the examples (``acr_low``, ``acr_high``), abstain rate and the number of images."""
        out = summarize(self.items, radii)
        interval = mean_interval([c.radius if c.correct else 0.0 for c in self.items])
        return {**out, "acr_low": interval.low, "acr_high": interval.high}

    def to_pandas(self) -> pd.DataFrame:
        """One row per example: index, label, prediction, radius, correct, abstained, p_lower, count, n, seconds."""
        rows = [{"index": c.index, "label": c.label, "prediction": c.prediction, "radius": c.radius,
                 "correct": c.correct, "abstained": c.prediction == ABSTAIN, "p_lower": c.p_lower, "count": c.count,
                 "n": c.n, "seconds": c.seconds} for c in self.items]
        return pd.DataFrame(rows, columns=["index", "label", "prediction", "radius", "correct", "abstained",
                                           "p_lower", "count", "n", "seconds"])
