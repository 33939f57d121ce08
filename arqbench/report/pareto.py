"""Pareto plots: ACR and smoothed accuracy against cost (% of float), one line per method across budgets.

Drawn on a bare matplotlib ``Figure`` (no pyplot, no display, no global backend) with matplotlib's default
style, and saved without the "Software" metadata, so the same numbers give the same PNG bytes.
"""

import io
from dataclasses import dataclass

import matplotlib.style
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

MARKERS = "osD^vP*Xh<>"


@dataclass
class Point:
    budget: float | None
    x: float  # cost, % of float
    x_err: float | None
    acr: float
    acr_err: tuple[float, float] | None  # (below, above): the 95% interval over images

    acc: float  # smoothed accuracy, %
    acc_err: float | None
    flagged: bool  # over budget or another base model: drawn hollow


def _spread(error) -> tuple[float, float]:
    """(below, above) of an error: a symmetric std or an interval's two arms."""
    if error is None:
        return 0.0, 0.0
    return (error, error) if isinstance(error, (int, float)) else tuple(error)


def png(title: str, series: list[tuple[str, int, list[Point]]], reference: Point | None,
        budgets: list[float], cost: str = "BitOPs") -> bytes:
    buffer = io.BytesIO()
    figure(title, series, reference, budgets, cost).savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def figure(title: str, series: list[tuple[str, int, list[Point]]], reference: Point | None,
           budgets: list[float], cost: str = "BitOPs") -> Figure:
    """``series``: (method, colour index, its points); ``reference``: the fp32 row; ``budgets`` in % of float;
    ``cost``: the cost model's name for the x axis."""
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(11, 4.2), dpi=100, layout="constrained")
        axes = fig.subplots(1, 2)
        panels = (("acr", "acr_err", "ACR (95% interval over images)", "fp32 ACR's 95% interval"),
                  ("acc", "acc_err", "smoothed accuracy (%, ± std over seeds)", "fp32 accuracy ± std"))
        for ax, (value, error, ylabel, band) in zip(axes, panels):
            for budget in budgets:
                ax.axvline(budget, color="0.85", linewidth=0.8, linestyle=":", zorder=0)
            if reference is not None:
                ax.axhline(getattr(reference, value), color="black", linestyle="--", linewidth=1, label="fp32")
                below, above = _spread(getattr(reference, error))
                if below or above:
                    ax.axhspan(getattr(reference, value) - below, getattr(reference, value) + above,
                               color="black", alpha=0.08, linewidth=0, label=band)
            for method, index, points in series:
                points = sorted(points, key=lambda p: p.x)
                colour = f"C{index % 10}"
                marker = MARKERS[index % len(MARKERS)]
                yerr = list(zip(*[_spread(getattr(p, error)) for p in points]))
                ax.errorbar([p.x for p in points], [getattr(p, value) for p in points],
                            xerr=[p.x_err or 0 for p in points], yerr=yerr,
                            color=colour, marker=marker, markersize=6, linewidth=1.2, capsize=3, label=method)
                hollow = [p for p in points if p.flagged]
                if hollow:
                    ax.plot([p.x for p in hollow], [getattr(p, value) for p in hollow], linestyle="none", zorder=5,
                            marker=marker, markersize=6, markerfacecolor="white", markeredgecolor=colour)
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(FixedLocator(budgets or [1, 10, 100]))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xlabel(f"{cost} (% of float); dotted: budgets")
            ax.set_ylabel(ylabel)
            ax.grid(True, axis="y", color="0.9")
        legend = {}
        for ax in axes:  # the methods and fp32's line once, each panel's fp32 band
            legend.update({label: handle for handle, label in zip(*ax.get_legend_handles_labels())})
        fig.legend(list(legend.values()), list(legend), loc="outside right upper", frameon=False)
        hollow = any(p.flagged for _, _, points in series for p in points)
        fig.suptitle(title + "  (means over seeds; horizontal bars: cost ± std over seeds"
                     + ("; hollow: over budget or other base model" if hollow else "") + ")", fontsize=10)
        return fig
