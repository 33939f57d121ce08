"""From per-example certificates to the protocol's numbers (DESIGN §4)."""

from typing import Iterable

from arqbench.smoothing.core import ABSTAIN, Certificate


def summarize(certificates: Iterable[Certificate], radii: Iterable[float]) -> dict:
    """Smoothed accuracy, certified accuracy at each radius, ACR and abstain rate.

    ACR = mean over examples of (radius if the smoothed prediction is correct else 0).
    """
    certs = list(certificates)
    if not certs:
        raise ValueError("no certificates to summarize")
    total = len(certs)
    return {
        "smoothed_acc": sum(c.correct for c in certs) / total,
        "certified_acc": {f"{r:g}": sum(c.correct and c.radius >= r for c in certs) / total for r in radii},
        "acr": sum(c.radius for c in certs if c.correct) / total,
        "abstain_rate": sum(c.prediction == ABSTAIN for c in certs) / total,
        "images": total,
    }
