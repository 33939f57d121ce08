"""The certified-accuracy-vs-radius figure: its numbers (against brute force and Cohen et al.'s analysis of
their certify.py files) and its files."""

import io

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from arqbench.report import cohen, curves
from arqbench.smoothing.core import (
    ABSTAIN,
    Certificate,
    certified_radius,
    lower_confidence_bound,
)


def cert(index, label, prediction, radius):
    return {"index": index, "label": label, "prediction": prediction, "radius": radius}


CERTS = [cert(0, 1, 1, 0.5), cert(1, 2, 2, 0.25), cert(2, 3, 0, 0.9), cert(3, 4, ABSTAIN, 0.0), cert(4, 5, 5, 1.0)]


def test_certified_accuracy_counts_correct_images_certified_at_least_r():
    radii = curves.grid(1.5)
    assert len(radii) == 151 and radii[0] == 0 and radii[-1] == 1.5 and 0.25 in radii and 1.0 in radii
    acc = curves.certified_accuracy(CERTS, radii)
    # correct radii 0.5, 0.25, 1.0 of 5 images; the wrong prediction (0.9) and the abstention never count
    at = dict(zip(radii.tolist(), acc.tolist()))
    assert at[0.0] == at[0.25] == 3 / 5 and at[0.26] == at[0.5] == 2 / 5 and at[0.51] == at[1.0] == 1 / 5
    assert at[1.01] == at[1.5] == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(-1, 2), st.floats(0, 2, allow_nan=False)), min_size=1,
                max_size=30), st.lists(st.floats(0, 2.5, allow_nan=False), min_size=1, max_size=10))
def test_certified_accuracy_is_brute_force(rows, radii):
    certs = [cert(i, label, prediction, 0.0 if prediction == ABSTAIN else radius)
             for i, (label, prediction, radius) in enumerate(rows)]
    radii = np.array(radii)
    brute = [sum(c["prediction"] == c["label"] and c["radius"] >= r for c in certs) / len(certs) for r in radii]
    assert curves.certified_accuracy(certs, radii).tolist() == brute


def test_curve_is_what_cohens_analysis_reads_from_a_certify_file(tmp_path):
    rng = np.random.default_rng(0)
    certs = [Certificate(i, int(rng.integers(3)), int(rng.integers(-1, 3)), 0.0, 0.0, 0, 100, 0.1) for i in range(40)]
    for c in certs:
        c.radius = 0.0 if c.prediction == ABSTAIN else round(float(rng.uniform(0, 1.2)), 2)  # exact at 3 digits
    path = tmp_path / "sigma_0.25"
    cohen.write(path, certs)
    radii = curves.grid(1.2)
    df = pd.read_csv(path, delimiter="\t")  # analyze.py's ApproximateAccuracy
    theirs = np.array([(df["correct"] & (df["radius"] >= r)).mean() for r in radii])
    assert np.array_equal(curves.certified_accuracy([c.as_dict() for c in certs], radii), theirs)


def test_largest_certifiable_radius():
    """sigma * Phi^-1(alpha^(1/n)): 2.70 sigma at n = 2000, alpha = 0.001 (DESIGN §4); the radius CERTIFY gives
    when all n samples vote for cA."""
    assert round(curves.certifiable(1.0, 2000, 0.001), 2) == 2.70
    for sigma, n, alpha in ((0.5, 100_000, 0.001), (0.25, 500, 0.01)):
        best = certified_radius(sigma, lower_confidence_bound(n, n, alpha))
        assert abs(curves.certifiable(sigma, n, alpha) - best) < 1e-9


def test_mean_and_std_over_seeds():
    radii = np.array([0.0, 0.3, 0.6])
    seeds = [[cert(0, 1, 1, 0.5), cert(1, 1, 1, 0.2)], [cert(0, 1, 1, 0.7), cert(1, 1, 0, 0.9)]]
    mean, std = curves.over_seeds(seeds, radii)
    assert np.allclose(mean, [(1 + 0.5) / 2, (0.5 + 0.5) / 2, (0 + 0.5) / 2])
    assert np.allclose(std, [np.std([1, 0.5], ddof=1), 0, np.std([0, 0.5], ddof=1)])
    assert curves.over_seeds(seeds[:1], radii)[1] is None


def test_png_and_csv_files():
    radii = curves.grid(1.0)
    lines = [curves.Curve("fp32", None, curves.certified_accuracy(CERTS, radii)),
             curves.Curve("arq", 0, *curves.over_seeds([CERTS, CERTS[:3]], radii)),
             curves.Curve("haq", 1, curves.certified_accuracy(CERTS[1:], radii))]
    image = curves.png("digits, sigma = 0.25, budget 2.5%", radii, lines)
    assert image.startswith(b"\x89PNG\r\n\x1a\n") and b"Software" not in image
    assert image == curves.png("digits, sigma = 0.25, budget 2.5%", radii, lines)  # reproducible bytes
    assert image != curves.png("digits, sigma = 0.25, budget 2.5%", radii, lines[:2])
    table = pd.read_csv(io.StringIO(curves.csv(radii, lines)))
    assert list(table.columns) == ["radius", "fp32", "arq", "arq std", "haq"]
    assert len(table) == 101 and np.allclose(table["radius"], radii)
    assert np.allclose(table["fp32"], lines[0].mean) and np.allclose(table["arq std"], lines[1].std)
