"""Certified accuracy against L2 radius, Cohen et al.'s standard figure: one line per method, fp32 dashed.

Certified accuracy at r = the fraction of certified images whose smoothed prediction is correct with a
certified radius >= r (Cohen et al.'s ``analyze.py``, ``ApproximateAccuracy``), on a fine radius grid
(their step, 0.01). A method with several seeds is drawn as the mean over seeds with a band of ± one sample
std. Drawn on a bare matplotlib ``Figure`` (no pyplot), saved without the "Software" metadata, so the same
numbers give the same PNG bytes; ``csv`` gives the plotted numbers, to be written beside the figure.
"""

import io
from dataclasses import dataclass
from typing import Iterable, Mapping

import matplotlib.style
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.stats import norm

RADIUS_STEP = 0.01


@dataclass
class Curve:
    label: str  # the method (with its options), or "fp32"
    colour: int | None  # matplotlib colour cycle index (as in the Pareto plot); None: the float reference
    mean: np.ndarray  # certified accuracy (fraction) at each radius of the grid
    std: np.ndarray | None = None  # sample std over seeds; None with one seed


def grid(max_radius: float, step: float = RADIUS_STEP) -> np.ndarray:
    """0, step, 2 step, ... up to ``max_radius`` inclusive, never beyond (rounded, so 0.25 is exactly on it)."""
    last = np.floor(max_radius / step + 1e-9) * step
    return np.round(np.arange(0, last + step / 2, step), 10)


def certifiable(sigma: float, n: int, alpha: float) -> float:
    """The largest radius CERTIFY can give with n samples: sigma * Phi^-1(alpha^(1/n)) (all n votes for cA)."""
    return float(sigma * norm.ppf(alpha ** (1 / n)))


def certified_accuracy(certificates: Iterable[Mapping], radii: np.ndarray) -> np.ndarray:
    """At each radius r: the fraction of ``certificates`` (dicts with label, prediction, radius) correct with
    radius >= r; an abstention (prediction -1) is never correct."""
    certs = list(certificates)
    if not certs:
        raise ValueError("no certificates")
    good = np.sort([c["radius"] for c in certs if c["prediction"] == c["label"]])
    return (len(good) - np.searchsorted(good, radii, side="left")) / len(certs)


def over_seeds(runs: Iterable[Iterable[Mapping]], radii: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean and sample std (None for one seed) over the seeds' certified-accuracy curves."""
    curves = np.array([certified_accuracy(certs, radii) for certs in runs])
    return curves.mean(axis=0), (curves.std(axis=0, ddof=1) if len(curves) > 1 else None)


def csv(radii: np.ndarray, curves: list[Curve]) -> str:
    """One row per radius: ``radius``, then per curve ``<label>`` (mean) and ``<label> std`` where known."""
    table = pd.DataFrame({"radius": radii})
    for curve in curves:
        table[curve.label] = curve.mean
        if curve.std is not None:
            table[f"{curve.label} std"] = curve.std
    return table.to_csv(index=False, float_format="%.6g")


def png(title: str, radii: np.ndarray, curves: list[Curve]) -> bytes:
    """The figure: certified accuracy (%) against radius, one line per curve."""
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(6.4, 4.2), dpi=100, layout="constrained")
        ax = fig.subplots()
        for curve in curves:
            reference = curve.colour is None
            colour = "black" if reference else f"C{curve.colour % 10}"
            ax.plot(radii, 100 * curve.mean, color=colour, linestyle="--" if reference else "-",
                    linewidth=1 if reference else 1.4, label=curve.label, zorder=3 if reference else 2)
            if curve.std is not None:
                ax.fill_between(radii, 100 * (curve.mean - curve.std), 100 * (curve.mean + curve.std),
                                color=colour, alpha=0.12, linewidth=0)
        ax.set_xlim(0, radii[-1] if len(radii) > 1 else 1)
        ax.set_ylim(0, 100)
        ax.set_xlabel("L2 radius")
        ax.set_ylabel("certified accuracy (%)")
        ax.grid(True, color="0.9")
        ax.legend(loc="upper right", frameon=False, fontsize=9)
        ax.set_title(title, fontsize=10)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
