"""Randomized smoothing science: confidence bounds, radius soundness against an exact linear classifier, PREDICT."""


import pytest
import torch
from scipy.stats import norm
from statsmodels.stats.proportion import proportion_confint
from torch import nn

from arqbench.smoothing.core import (
    ABSTAIN,
    Certificate,
    SmoothingConfig,
    certified_radius,
    certify,
    generators,
    lower_confidence_bound,
    max_certified_radius,
    predict,
    sample_predictions,
    upper_confidence_bound,
)
from arqbench.smoothing.metrics import summarize


@pytest.mark.parametrize("k,n,alpha", [(0, 10, 0.05), (1, 10, 0.05), (50, 100, 0.001), (999, 1000, 0.001),
                                       (1000, 1000, 0.001), (73, 200, 0.01)])
def test_clopper_pearson_matches_statsmodels(k, n, alpha):
    low, high = proportion_confint(k, n, alpha=2 * alpha, method="beta")
    assert lower_confidence_bound(k, n, alpha) == pytest.approx(low, abs=1e-12)
    assert upper_confidence_bound(k, n, alpha) == pytest.approx(high, abs=1e-12)


def linear_classifier(w: torch.Tensor, b: float) -> nn.Module:
    """Two-class linear classifier: class 1 iff w.x + b > 0."""
    model = nn.Linear(len(w), 2)
    with torch.no_grad():
        model.weight.copy_(torch.stack([-w / 2, w / 2]))
        model.bias.copy_(torch.tensor([-b / 2, b / 2]))
    return model.eval()


def exact_radius(w, b, x) -> float:
    """The smoothed linear classifier's exact L2 radius: the distance to its decision boundary."""
    return abs(float(w @ x) + b) / float(w.norm())


def test_certified_radius_is_sound_for_a_linear_classifier():
    torch.manual_seed(0)
    w, b, sigma, alpha = torch.tensor([1.0, -2.0, 0.5]), 0.3, 0.5, 0.01
    model = linear_classifier(w, b)
    config = SmoothingConfig(sigma=sigma, n0=50, n=500, alpha=alpha, batch_size=500, seed=1)
    points = torch.randn(400, 3) * 0.6
    violations = 0
    for i, x in enumerate(points):
        label = int(float(w @ x) + b > 0)
        cert = certify(model, x, label, i, config, num_classes=2)
        if cert.prediction != ABSTAIN:
            assert cert.prediction == label  # the smoothed linear classifier predicts the true side
            violations += cert.radius > exact_radius(w, b, x) + 1e-9
    # Each certificate is wrong with probability <= alpha: 400 * 0.01 = 4 expected at most; 12 has p < 1e-3.
    assert violations <= 12


def test_certified_radius_approaches_the_exact_radius_for_large_n():
    w, b, sigma = torch.tensor([0.6, 0.8]), 0.0, 1.0
    model = linear_classifier(w, b)
    config = SmoothingConfig(sigma=sigma, n0=100, n=200_000, alpha=0.001, batch_size=50_000, seed=3)
    for i, distance in enumerate([0.3, 0.8, 1.5]):
        x = w * distance  # |w| = 1, so the exact radius is `distance`
        cert = certify(model, x, 1, i, config, num_classes=2)
        assert cert.radius <= distance
        assert cert.radius == pytest.approx(distance, abs=0.03)


def test_radius_formula():
    assert certified_radius(0.5, norm.cdf(2.0)) == pytest.approx(1.0)
    assert certified_radius(0.25, 0.5) == pytest.approx(0.0)


@pytest.mark.parametrize("sigma, n, alpha", [(0.25, 2000, 0.001), (0.5, 200, 0.001), (1.0, 100_000, 0.01), (0.25, 8, 0.001)])
def test_the_largest_certifiable_radius_is_reached_when_every_sample_votes_for_the_top_class(sigma, n, alpha):
    """CERTIFY's radius grows with nA; at nA = n it is sigma * Phi^-1 of statsmodels' Clopper-Pearson bound."""
    cap = max_certified_radius(sigma, n, alpha)
    assert cap == pytest.approx(sigma * norm.ppf(proportion_confint(n, n, 2 * alpha, "beta")[0]), rel=1e-9)
    assert all(sigma * norm.ppf(lower_confidence_bound(k, n, alpha)) < cap for k in range(max(0, n - 50), n))
    assert (cap > 0) == (n >= 10)  # at alpha = 0.001 no certificate below 10 samples: 0.001^(1/9) < 1/2


def test_a_warning_names_the_radii_beyond_reach_and_the_n_the_first_needs(capsys):
    from arqbench import plugins
    from arqbench.pipeline.config import resolve
    from arqbench.pipeline.sweep import warn_uncertifiable

    digits = plugins.create("benchmark", "digits")  # radii 0.25 .. 1.5
    warn_uncertifiable(digits, 0.25, resolve(digits, {"n": 200}))
    line = " ".join(capsys.readouterr().err.split())
    cap = max_certified_radius(0.25, 200, 0.001)
    assert 0.25 < cap < 0.5 and "radii 0.5, 0.75, 1, 1.25, 1.5 cannot be certified with n=200 at alpha=0.001" in line
    needed = int(line.rsplit("needs --n ", 1)[1].split()[0])
    assert max_certified_radius(0.25, needed, 0.001) >= 0.5 > max_certified_radius(0.25, needed - 1, 0.001)
    warn_uncertifiable(digits, 0.25, resolve(digits, {"n": 10**9}))  # 1.5 = 6 sigma needs ~7e9 samples
    assert "radii 1.5 cannot" in " ".join(capsys.readouterr().err.split())


def test_abstains_when_the_top_class_is_not_confident():
    w = torch.tensor([1.0, 0.0])
    model = linear_classifier(w, 0.0)
    config = SmoothingConfig(sigma=1.0, n0=50, n=400, alpha=0.001, batch_size=400, seed=0)
    cert = certify(model, torch.zeros(2), 1, 0, config, num_classes=2)  # on the boundary: pA = 0.5
    assert cert.prediction == ABSTAIN and cert.radius == 0.0


def test_predict_abstains_on_a_tie_and_answers_when_clear():
    model = linear_classifier(torch.tensor([1.0, 0.0]), 0.0)
    config = SmoothingConfig(sigma=0.5, n0=10, n=2000, alpha=0.001, batch_size=1000, seed=0)
    assert predict(model, torch.zeros(2), 0, config, 2) == ABSTAIN
    assert predict(model, torch.tensor([2.0, 0.0]), 1, config, 2) == 1
    assert predict(model, torch.tensor([-2.0, 0.0]), 2, config, 2) == 0


def test_samples_are_seeded_per_example_and_independent_of_batching():
    model = linear_classifier(torch.tensor([1.0, 1.0]), 0.0)
    xs = torch.tensor([[0.1, -0.05], [0.3, 0.2], [-0.4, 0.0]])
    cpu = torch.device("cpu")

    def draw(num, batch_size, which=(0, 1, 2)):
        return sample_predictions(model, xs[list(which)], num, 1.0, batch_size, generators(cpu, 5, which, 1))

    reference = draw(750, 200)
    assert torch.equal(reference, draw(750, 200))  # seeded
    assert torch.equal(reference, draw(750, 1000))  # the batch size is only a speed knob
    assert torch.equal(reference, draw(750, 30))  # even below one noise chunk
    assert torch.equal(reference[2], draw(750, 200, which=(2,))[0])  # other examples change nothing
    assert torch.equal(reference[:, :250], draw(250, 64))  # the first k samples replay exactly
    assert not torch.equal(reference[0], reference[1])


def test_summary_metrics():
    certs = [Certificate(0, 1, 1, 0.8, 0.9, 90, 100, 0.0), Certificate(1, 0, 1, 0.5, 0.8, 80, 100, 0.0),
             Certificate(2, 2, ABSTAIN, 0.0, 0.4, 40, 100, 0.0), Certificate(3, 3, 3, 0.2, 0.7, 70, 100, 0.0)]
    m = summarize(certs, radii=[0.0, 0.25, 0.5, 1.0])
    assert m["smoothed_acc"] == 0.5
    assert m["acr"] == pytest.approx((0.8 + 0.2) / 4)
    assert m["certified_acc"] == {"0": 0.5, "0.25": 0.25, "0.5": 0.25, "1": 0.0}
    assert m["abstain_rate"] == 0.25
