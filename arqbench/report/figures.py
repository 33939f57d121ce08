"""The figures that show inside a search: bits per layer, learning curves with candidates, sensitivity heatmaps.

Drawn from tidy pandas tables (the very CSVs written beside each figure, see ``arqbench.report.inside``) on
bare matplotlib ``Figure`` objects (no pyplot, no global backend) with matplotlib's default style, saved
without the "Software" metadata so the same numbers give the same PNG bytes.
"""

import io

import matplotlib.style
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from arqbench.report.pareto import MARKERS


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _colour(index: int) -> str:
    return f"C{index % 10}"


def bits_png(title: str, bits: pd.DataFrame, colours: dict[str, int]) -> bytes:
    return _png(bits_figure(title, bits, colours))


def bits_figure(title: str, bits: pd.DataFrame, colours: dict[str, int]) -> Figure:
    """Where each method put its bits: per budget, a heatmap of layers (rows, network order) by methods
    (columns) of the mean weight bits over seeds, and one of the mean activation bits beside it; at the left,
    each layer's share of the float model's cost. Every cell is annotated with its bits.

    ``bits``: the bits CSV of one (protocol, sigma): budget, label, seed, layer, index, w_bits, a_bits,
    float_cost_share.
    """
    budgets = sorted(bits["budget"].unique())
    layers = bits.drop_duplicates("layer").sort_values("index")
    names = list(layers["layer"])
    methods = [m for m in colours if m in set(bits["label"])]
    with matplotlib.style.context("default"):
        width = 2.2 + (0.42 * len(methods) + 0.25) * 2 * len(budgets) + 0.8
        fig = Figure(figsize=(max(6.0, width), 0.3 * len(names) + 2.2), dpi=100, layout="constrained")
        axes = fig.subplots(1, 1 + 2 * len(budgets), sharey=True,
                            width_ratios=[max(2, len(methods) // 2)] + [len(methods)] * 2 * len(budgets))
        share = axes[0]
        values = 100 * layers["float_cost_share"].fillna(0).to_numpy()
        share.barh(np.arange(len(names)), values, color="0.6", height=0.7)
        for i, v in enumerate(values):
            share.text(v, i, f" {v:.1f}", va="center", fontsize=7)
        share.set_xlim(0, 1.35 * max(values.max(), 1e-9))
        share.set_yticks(range(len(names)), [n.removeprefix("net.") for n in names], fontsize=8)
        share.set_ylim(len(names) - 0.5, -0.5)
        share.set_title("share of\nfloat cost (%)", fontsize=9)
        share.tick_params(axis="x", labelsize=7)
        for k, budget in enumerate(budgets):
            here = bits[bits["budget"] == budget]
            for ax, column, what in ((axes[1 + 2 * k], "w_bits", "weights"), (axes[2 + 2 * k], "a_bits",
                                                                             "activations")):
                grid = here.pivot_table(index="layer", columns="label", values=column, aggfunc="mean")
                data = grid.reindex(index=names, columns=methods).to_numpy(dtype=float)
                image = ax.imshow(data, cmap="viridis", vmin=2, vmax=8, aspect="auto")
                for (i, j), v in np.ndenumerate(data):
                    if np.isfinite(v):
                        ax.text(j, i, f"{v:.0f}" if v == round(v) else f"{v:.1f}", ha="center", va="center",
                                fontsize=7, color="white" if v < 5 else "black")
                ax.set_xticks(range(len(methods)), methods, rotation=90, fontsize=8)
                ax.tick_params(axis="y", left=False)
                ax.set_title(f"budget {100 * budget:g}%\n{what}", fontsize=9)
        fig.colorbar(image, ax=list(axes), shrink=0.6, pad=0.01, label="bits (mean over seeds)")
        fig.suptitle(title + "  (bits per layer, mean over seeds)", fontsize=10)
        return fig


def learning_png(title: str, candidates: pd.DataFrame, colours: dict[str, int]) -> bytes:
    """``learning_figure`` as PNG bytes."""
    return _png(learning_figure(title, candidates, colours))


def learning_figure(title: str, candidates: pd.DataFrame, colours: dict[str, int]) -> Figure:
    """One row per RL method. Left: reward per episode (dots) and best so far (line), one shade per seed, the
    shipped episode starred; where the search re-scored its top candidates, each is ringed at its search
    reward and its re-score drawn as a diamond at the same episode, joined by a thin line; a dashed grey line
    (right axis) counts the distinct policies scored so far, so an agent that stopped exploring shows. Right: every
    scored candidate's cost against its ACR as the search measured it (where it did), their Pareto front,
    and the shipped policy's final (fine-tuned, fully certified) ACR as a star joined to its search ACR, so
    the gap between what the search optimised and what shipped shows.

    ``candidates``: the learning CSV of one (protocol, sigma, budget).
    """
    methods = [m for m in colours if m in set(candidates["label"])]
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(11, 3.6 * len(methods)), dpi=100, layout="constrained")
        axes = fig.subplots(len(methods), 2, squeeze=False)
        for (left, right), method in zip(axes, methods):
            mine = candidates[candidates["label"] == method]
            colour = _colour(colours[method])
            seeds = sorted(mine["seed"].unique())
            explored = left.twinx() if "distinct" in mine else None
            for s, seed in enumerate(seeds):
                run = mine[mine["seed"] == seed].sort_values("episode")
                shade = 1.0 - 0.5 * s / max(1, len(seeds))
                marker = MARKERS[s % len(MARKERS)]
                left.plot(run["episode"], run["reward"], linestyle="none", marker=".", markersize=3, color=colour,
                          alpha=0.35 * shade)
                first = s == 0
                left.step(run["episode"], run["best_reward"], where="post", color=colour, alpha=shade,
                          label="best so far (a line per seed)" if first else None)
                if explored is not None:
                    explored.plot(run["episode"], run["distinct"], color="0.5", linestyle="--", linewidth=0.8,
                                  alpha=shade)
                shipped = run[run["shipped"]]
                left.plot(shipped["episode"], shipped["reward"], linestyle="none", marker="*", markersize=12,
                          color=colour, markeredgecolor="black")
                rescored = run[run["rescored"]] if "rescored" in run else run.iloc[:0]
                if len(rescored):
                    left.vlines(rescored["episode"], rescored["reward"], rescored["rescore"], color="0.4",
                                linewidth=0.8)
                    left.plot(rescored["episode"], rescored["reward"], linestyle="none", marker="o", markersize=7,
                              markerfacecolor="none", markeredgecolor=colour,
                              label="re-scored: search reward" if first else None)
                    left.plot(rescored["episode"], rescored["rescore"], linestyle="none", marker="D", markersize=5,
                              color=colour, markeredgecolor="black", label="re-scored: re-score" if first else None)
                scored = run[~run["revisit"] & run["search_acr"].notna()]
                if len(scored):
                    right.plot(100 * scored["cost"], scored["search_acr"], linestyle="none", marker=marker,
                               markersize=3, color=colour, alpha=0.3)
                    front = scored[scored["pareto"]].sort_values("cost")
                    right.step(100 * front["cost"], front["search_acr"], where="post", color=colour, alpha=shade,
                               label="Pareto front of the candidates (per seed)" if first else None)
                for _, row in shipped.drop_duplicates("seed").iterrows():
                    if pd.notna(row["search_acr"]):
                        right.plot([100 * row["cost"]] * 2, [row["search_acr"], row["final_acr"]], color="0.4",
                                   linestyle=":", linewidth=1)
                    right.plot(100 * row["cost"], row["final_acr"], linestyle="none", marker="*", markersize=13,
                               color=colour, markeredgecolor="black",
                               label="shipped policy: final ACR (dotted to its search ACR)" if first else None)
            left.set_xlabel("episode")
            left.set_ylabel(f"{method}: reward")
            if explored is not None:
                explored.set_ylabel("distinct candidates so far (dashed)", color="0.4", fontsize=8)
            left.grid(True, color="0.9")
            left.legend(fontsize=8, frameon=False)
            right.set_xlabel("cost (% of float)")
            right.set_ylabel("ACR")
            right.grid(True, color="0.9")
            if mine["search_acr"].isna().all():
                right.text(0.02, 0.95, "this search measures no ACR of its candidates", transform=right.transAxes,
                           fontsize=8, va="top", color="0.4")
            right.legend(fontsize=8, frameon=False)
        fig.suptitle(title + "  (star: the shipped policy; right: dots = candidates' search ACR)", fontsize=10)
        return fig


def heatmap_png(title: str, profile: pd.DataFrame) -> bytes:
    return _png(heatmap_figure(title, profile))


def heatmap_figure(title: str, profile: pd.DataFrame) -> Figure:
    """Layers (rows, network order) by bits (columns): the loss when only that layer is quantized, mean over
    the seeds present. Columns of panels: the metric (ACR drop, or disagreement) and the clean-accuracy drop;
    a second row for the activations when they were profiled. Every cell is annotated with its value, to two
    decimals (one from 10, none from 100); a panel whose values are all >= 0 is white to red from 0, one
    with gains too is blue-white-red around 0.

    ``profile``: the sensitivity CSV: layer, index, w_bits, a_bits, acr_drop | disagreement, clean_acc_drop.
    """
    metric = "disagreement" if profile["disagreement"].notna().any() and profile["acr_drop"].isna().all() \
        else "acr_drop"
    labels = {"acr_drop": "ACR drop", "disagreement": "disagreement with float", "clean_acc_drop":
              "clean accuracy drop (points)"}
    parts = [("weights", profile[profile["a_bits"] == 8], "w_bits")]
    activations = profile[(profile["w_bits"] == 8) & (profile["a_bits"] < 8)]
    if len(activations):
        parts.append(("activations", profile[profile["w_bits"] == 8], "a_bits"))
    layers = profile.drop_duplicates("layer").sort_values("index")["layer"].tolist()
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(11, 0.45 * len(layers) * len(parts) + 1.6 * len(parts)), dpi=100,
                     layout="constrained")
        axes = fig.subplots(len(parts), 2, squeeze=False)
        for row, (part, rows, column) in zip(axes, parts):
            for ax, value in zip(row, (metric, "clean_acc_drop")):
                scale = 100 if value == "clean_acc_drop" else 1
                grid = rows.pivot_table(index="layer", columns=column, values=value, aggfunc="mean")
                grid = grid.reindex(index=layers, columns=range(2, 9)) * scale
                data = grid.to_numpy(dtype=float)
                bound = (np.nanmax(np.abs(data)) if np.isfinite(data).any() else 0.0) or 1.0
                if np.nanmin(data, initial=0.0) >= 0:
                    image = ax.imshow(data, cmap="Reds", vmin=0, vmax=bound, aspect="auto")
                else:
                    image = ax.imshow(data, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
                decimals = 0 if bound >= 100 else 1 if bound >= 10 else 2
                for (i, j), v in np.ndenumerate(data):
                    if np.isfinite(v):
                        ax.text(j, i, f"{v:.{decimals}f}", ha="center", va="center", fontsize=7,
                                color="white" if abs(v) > 0.6 * bound else "black")
                ax.set_xticks(range(7), [str(b) for b in range(2, 9)])
                ax.set_yticks(range(len(layers)), [n.removeprefix("net.") for n in layers], fontsize=8)
                ax.set_xlabel(f"{part} bits (the other at 8)")
                ax.set_title(f"{labels[value]}, {part}", fontsize=10)
                fig.colorbar(image, ax=ax, shrink=0.8)
        fig.suptitle(title + "  (only that layer quantized; red: loses robustness; mean over seeds)", fontsize=10)
        return fig
