"""What the bits, sensitivity and ACR figures draw, read back from their matplotlib objects (the published
leaderboards' CSVs as input)."""

from pathlib import Path

import numpy as np
import pandas as pd

from arqbench.report import figures

BOARDS = Path(__file__).parent.parent / "leaderboards"
METHODS = ["arq", "haq", "hawq", "random", "robust-ilp", "uniform"]


def test_bits_figure_is_a_heatmap_of_layers_by_methods_per_budget():
    bits = pd.read_csv(BOARDS / "digits-mobilenetv2-sigma0.25-bits.csv")
    fig = figures.bits_figure("t", bits, {m: i for i, m in enumerate(METHODS)})
    share, *heatmaps = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    budgets = sorted(bits["budget"].unique())
    assert len(heatmaps) == 2 * len(budgets)
    layers = bits.drop_duplicates("layer").sort_values("index")
    assert [t.get_text() for t in share.get_yticklabels()] == [n.removeprefix("net.") for n in layers["layer"]]
    assert np.allclose([p.get_width() for p in share.patches], 100 * layers["float_cost_share"])
    for k, budget in enumerate(budgets):
        here = bits[bits["budget"] == budget]
        for ax, column in zip(heatmaps[2 * k:2 * k + 2], ("w_bits", "a_bits")):
            assert [t.get_text() for t in ax.get_xticklabels()] == METHODS
            expected = here.pivot_table(index="layer", columns="label", values=column, aggfunc="mean")
            expected = expected.reindex(index=layers["layer"], columns=METHODS).to_numpy()
            assert np.allclose(ax.images[0].get_array(), expected)
            assert f"{100 * budget:g}%" in ax.get_title()


def test_sensitivity_heatmap_is_sequential_when_nothing_gains_and_its_numbers_are_short():
    profile = pd.read_csv(BOARDS / "digits-mobilenetv2-sigma0.25-sensitivity.csv")
    fig = figures.heatmap_figure("t", profile)
    ax = fig.axes[0]
    image = ax.images[0]
    assert image.get_cmap().name == "Reds" and image.get_clim()[0] == 0
    assert all(len(t.get_text()) <= 5 for t in ax.texts)  # 0.11, not 0.1103
    gains = profile.assign(acr_drop=profile["acr_drop"] - 0.05)
    assert figures.heatmap_figure("t", gains).axes[0].images[0].get_cmap().name == "RdBu_r"


def test_the_acr_figure_labels_the_fp32_band_and_names_no_hollow_markers_it_does_not_draw():
    from arqbench.report import pareto

    fp32 = pareto.Point(None, 100.0, None, 0.57, (0.03, 0.03), 98.0, 0.5, False)
    point = pareto.Point(0.02, 2.0, 0.1, 0.5, (0.02, 0.02), 97.0, 0.5, False)
    fig = pareto.figure("t", [("arq", 0, [point])], fp32, [2.0])
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["fp32", "fp32 ACR's 95% interval", "arq", "fp32 accuracy ± std"]
    assert "hollow" not in fig.get_suptitle()
    over = pareto.Point(0.02, 2.5, 0.1, 0.5, (0.02, 0.02), 97.0, 0.5, True)
    assert "hollow" in pareto.figure("t", [("arq", 0, [over])], fp32, [2.0]).get_suptitle()


def test_learning_figure_marks_the_rescored_candidates_and_the_shipped_one():
    from arqbench.report.inside import candidates_frame

    history = [{"episode": i, "policy": {"a": [b, 8]}, "cost": 0.01 * b, "reward": r, "acr": 0.1 * b, "revisit": False}
               for i, (b, r) in enumerate([(2, -3.0), (3, -1.0), (4, -2.0), (5, 0.5), (6, -0.5)])]
    rescored = [{"episode": e, "policy": history[e]["policy"], "cost": history[e]["cost"],
                 "reward": history[e]["reward"], "rescore": s, "rescore_record": {}, "shipped": e == 4}
                for e, s in ((3, -1.5), (4, -0.2), (1, -0.9))]
    result = {"method": "arq", "seed": 0, "policy": {"a": [6, 8]}, "metrics": {"acr": 0.7},
              "search": {"history": history, "rescored": rescored, "best_episode": 4}}
    frame = candidates_frame([(0.05, "arq", result)])
    assert frame["rescored"].tolist() == [False, True, False, True, True]
    assert frame["rescore"].iloc[[1, 3, 4]].tolist() == [-0.9, -1.5, -0.2]
    assert frame["shipped"].tolist() == [False, False, False, False, True]

    left = figures.learning_figure("t", frame, {"arq": 0}).axes[0]
    lines = {line.get_label(): line for line in left.get_lines()}
    ring, diamond = lines["re-scored: search reward"], lines["re-scored: re-score"]
    assert ring.get_marker() == "o" and diamond.get_marker() == "D"
    assert list(ring.get_xdata()) == [1, 3, 4] and list(ring.get_ydata()) == [-1.0, 0.5, -0.5]
    assert list(diamond.get_xdata()) == [1, 3, 4] and list(diamond.get_ydata()) == [-0.9, -1.5, -0.2]
    star = next(line for line in left.get_lines() if line.get_marker() == "*")
    assert list(star.get_xdata()) == [4] and list(star.get_ydata()) == [-0.5]  # the best re-score ships
    segments = left.collections[0].get_segments()  # each re-scored candidate: search reward joined to its re-score
    assert [(s[0][0], s[0][1], s[1][1]) for s in segments] == [(1, -1.0, -0.9), (3, 0.5, -1.5), (4, -0.5, -0.2)]
