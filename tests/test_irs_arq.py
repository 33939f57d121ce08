"""Incremental randomized smoothing (soundness, caching, fallback) and the arq search end to end."""

import json

import pytest
import torch
from conftest import TINY
from scipy.stats import norm
from test_smoothing import exact_radius, linear_classifier

from arqbench import plugins
from arqbench.pipeline.results import read
from arqbench.smoothing.certification import Reference
from arqbench.smoothing.core import ABSTAIN, SmoothingConfig


def examples(points, w, b):
    return [(i, x, int(float(w @ x) + b > 0)) for i, x in enumerate(points)]


def test_irs_radius_is_sound_for_a_linear_classifier_with_a_shifted_bias():
    """f and f_p = f with its bias moved: f_p's exact smoothed radius is its distance to its own boundary."""
    torch.manual_seed(0)
    w, b, shift, sigma = torch.tensor([0.8, -0.6]), 0.2, 0.15, 0.5
    f, f_p = linear_classifier(w, b), linear_classifier(w, b + shift)
    points = torch.randn(300, 2) * 0.7
    config = SmoothingConfig(sigma=sigma, n0=50, n=1000, alpha=0.01, batch_size=1000, seed=2)
    irs = plugins.create("certifier", "irs", alpha_zeta=0.01, n_p=0.2, gamma=1.0)  # gamma 1: never fall back
    reference = Reference(f, {"test": "shifted-bias", "b": b})
    labels_p = [(i, x, int(float(w @ x) + b + shift > 0)) for i, x in enumerate(points)]
    certs = irs.certify(f_p, labels_p, config, 2, reference)
    violations = certified = 0
    for cert, (_, x, label) in zip(certs, labels_p):
        if cert.prediction == ABSTAIN:
            continue
        certified += 1
        if cert.prediction == label:
            violations += cert.radius > exact_radius(w, b + shift, x) + 1e-9
        else:
            violations += 1  # certifying the wrong class at any radius is a failure
        # the disagreement bound is a valid upper bound of the exact disagreement probability, mostly
        assert cert.details["n_p"] == 200
    # overall failure probability <= alpha + alpha_zeta = 0.02 per certificate: 6 expected of 300, 16 has p < 1e-3
    assert certified > 100 and violations <= 16


def test_irs_tracks_the_exact_disagreement():
    """With f_p = f the bound only reflects n_p; with a large shift IRS certifies much less."""
    w, b, sigma = torch.tensor([1.0, 0.0]), 0.0, 0.5
    f = linear_classifier(w, b)
    config = SmoothingConfig(sigma=sigma, n0=50, n=2000, alpha=0.001, batch_size=2000, seed=0)
    reference = Reference(f, {"test": "identity"})
    x = [(0, torch.tensor([0.6, 0.0]), 1)]
    irs = {"n_p": 0.5, "gamma": 1.0}
    same = plugins.create("certifier", "irs", **irs).certify(f, x, config, 2, reference)[0]
    shifted = plugins.create("certifier", "irs", **irs).certify(linear_classifier(w, b - 0.3), x, config, 2,
                                                                reference)[0]
    assert same.details["disagreements"] == 0
    exact_p = norm.cdf(0.6 / sigma) - norm.cdf(0.3 / sigma)  # P(0 < x1 + e < 0.3): f says 1, f_p says 0
    assert shifted.details["disagreements"] / 1000 == pytest.approx(exact_p, abs=0.03)
    assert shifted.details["zeta"] >= exact_p - 0.01 and shifted.radius < same.radius


def test_float_certification_is_cached_and_reused_across_candidates_and_runs():
    w = torch.tensor([1.0, 1.0])
    f = linear_classifier(w, 0.0)
    points = torch.randn(6, 2)
    config = SmoothingConfig(sigma=0.5, n0=20, n=300, alpha=0.01, batch_size=300, seed=9)
    reference = Reference(f, {"test": "cache"})
    first = plugins.create("certifier", "irs", n_p=0.2, gamma=1.0)
    for shift in (0.0, 0.1, -0.1):  # three candidates, one float certification
        first.certify(linear_classifier(w, shift), examples(points, w, 0.0), config, 2, reference)
    assert first.stats["float_certified"] == 6 and first.stats["float_reused"] == 12
    second = plugins.create("certifier", "irs")  # a new run: read from disk
    second.certify(f, examples(points, w, 0.0), config, 2, reference)
    assert second.stats["float_certified"] == 0 and second.stats["float_reused"] == 6
    other = plugins.create("certifier", "irs")  # other settings: other cache entries
    other.certify(f, examples(points, w, 0.0), SmoothingConfig(**{**config.__dict__, "seed": 10}), 2, reference)
    assert other.stats["float_certified"] == 6


def test_a_confident_example_falls_back_to_plain_smoothing_with_n_p_samples():
    w = torch.tensor([1.0, 0.0])
    f = linear_classifier(w, 0.0)
    config = SmoothingConfig(sigma=0.25, n0=20, n=1000, alpha=0.001, batch_size=1000, seed=0)
    reference = Reference(f, {"test": "fallback"})
    irs = plugins.create("certifier", "irs", n_p=0.1, gamma=0.99)
    cert = irs.certify(f, [(0, torch.tensor([2.0, 0.0]), 1)], config, 2, reference)[0]
    assert cert.details == {"fallback": True, "n_p": 100} and cert.n == 100 and cert.prediction == 1
    # all 100 fresh samples agree: the bound at level alpha + alpha_zeta is (alpha + alpha_zeta)^(1/100)
    assert cert.p_lower == pytest.approx(0.002 ** (1 / 100))


def test_the_fallback_draws_noise_no_other_estimate_uses():
    """The from-scratch branch was chosen on the float model's estimation samples; its own selection and
    estimation samples come from streams of their own, and it is exactly Cohen's CERTIFY on them."""
    from arqbench.smoothing.core import (
        ESTIMATION,
        PREDICTION,
        REESTIMATION,
        RESELECTION,
        SELECTION,
        certify_many,
        generators,
    )

    seed, indices = 3, list(range(40))
    streams = {phase: torch.stack([torch.randn(100, generator=g) for g in generators("cpu", seed, indices, phase)])
               for phase in (SELECTION, ESTIMATION, PREDICTION, RESELECTION, REESTIMATION)}
    flat = {phase: s.flatten() for phase, s in streams.items()}
    runs = {phase: {tuple(f[i:i + 3].tolist()) for i in range(len(f) - 2)} for phase, f in flat.items()}
    for a in flat:
        for b in flat:
            if a < b:  # independent streams: no run of samples shared, correlation at noise level (4000 pairs)
                assert not runs[a] & runs[b]
                assert abs(torch.corrcoef(torch.stack([flat[a], flat[b]]))[0, 1]) < 0.08
    # and the same example's next index never reuses a fallback stream
    assert not torch.equal(streams[RESELECTION][1], streams[REESTIMATION][0])

    w = torch.tensor([1.0, 0.0])
    f, f_p = linear_classifier(w, 0.0), linear_classifier(w, 0.4)
    config = SmoothingConfig(sigma=0.5, n0=30, n=2000, alpha=0.001, batch_size=2000, seed=seed)
    x = [(7, torch.tensor([2.5, 0.0]), 1)]
    irs = plugins.create("certifier", "irs", n_p=0.1, gamma=0.99)
    cert = irs.certify(f_p, x, config, 2, Reference(f, {"test": "fallback-noise"}))[0]
    assert cert.details["fallback"]
    direct = certify_many(f_p, x, SmoothingConfig(sigma=0.5, n0=30, n=200, alpha=0.002, batch_size=2000, seed=seed),
                          2, phases=(RESELECTION, REESTIMATION))[0]
    assert (cert.prediction, cert.count, cert.p_lower) == (direct.prediction, direct.count, direct.p_lower)


def test_irs_radius_is_sound_on_examples_that_fall_back():
    """Examples far from f's boundary take the fallback; f_p's exact radius must still bound theirs."""
    torch.manual_seed(1)
    w, b, shift, sigma = torch.tensor([0.6, 0.8]), 0.0, -0.1, 0.5
    f, f_p = linear_classifier(w, b), linear_classifier(w, b + shift)
    points = torch.randn(300, 2) * 2.0
    config = SmoothingConfig(sigma=sigma, n0=30, n=1000, alpha=0.01, batch_size=1000, seed=5)
    irs = plugins.create("certifier", "irs", alpha_zeta=0.01, n_p=0.2, gamma=0.99)
    labels_p = [(i, x, int(float(w @ x) + b + shift > 0)) for i, x in enumerate(points)]
    certs = irs.certify(f_p, labels_p, config, 2, Reference(f, {"test": "fallback-sound"}))
    fallbacks = [c for c in certs if c.details.get("fallback")]
    assert len(fallbacks) > 100  # most points are far from the boundary
    violations = 0
    for cert, (_, x, label) in zip(certs, labels_p):
        if cert.prediction != ABSTAIN:
            violations += cert.prediction != label or cert.radius > exact_radius(w, b + shift, x) + 1e-9
    assert violations <= 16  # alpha + alpha_zeta = 0.02 per certificate: 6 expected of 300


def test_irs_without_a_reference_is_a_clear_error():
    from arqbench.errors import ArqbenchError

    with pytest.raises(ArqbenchError, match="needs the float reference model"):
        plugins.create("certifier", "irs").certify(linear_classifier(torch.ones(2), 0.0), [],
                                                   SmoothingConfig(sigma=0.5), 2)


def test_arq_search_on_digits_meets_the_budget_and_records_its_search(cli, tmp_path):
    code, out, err = cli("run", "--methods", "arq", "--sigma", "0.25", "--budget", "0.03", "--episodes", "3",
                         "--option", "arq.warmup=1", "--option", "arq.images=6", "--option", "arq.estimator=certified",
                         "--option", "arq.finetune_steps=0", "--out", tmp_path, *TINY)
    assert code == 0, err
    record = read(tmp_path / "digits/sigma0.25/budget0.03/arq-seed0.json")
    assert record["status"] == "ok" and record["cost"]["fraction"] <= 0.03
    search = record["search"]
    assert search["images"] == 6 and search["certifier"] == "irs"
    assert search["certifier_stats"]["float_certified"] == 6  # once, then reused by every candidate
    scored = sum(not h["revisit"] for h in search["history"])  # a revisited policy is not certified again
    assert search["certifier_stats"]["float_reused"] == 6 * scored
    for h in search["history"]:
        assert {"acr", "smoothed_acc", "zeta_mean", "fallbacks", "reward", "cost"} <= set(h)
    # reward = relative ACR change against the float model's IRS ACR
    h = search["history"][0]
    assert h["reward"] == pytest.approx((h["acr"] - search["float_acr"]) / search["float_acr"])


def test_arq_predicted_reward_never_falls_back_in_its_rescore_with_default_options(cli, tmp_path):
    """The ``predicted`` estimator asks irs for gamma = 1 whatever options the run gave (none here): at
    rescore_n = 2000 a confident digits image has pA_lower up to 0.9965 >= irs's default gamma 0.99, which
    would certify it from scratch on N_p samples instead of pairing it with the float model."""
    code, out, err = cli("run", "--methods", "arq", "--sigma", "0.25", "--budget", "0.05", "--episodes", "2",
                         "--option", "arq.warmup=2", "--option", "arq.images=4", "--option", "arq.rescore_top=1",
                         "--option", "arq.rescore_images=12", "--option", "arq.finetune_steps=0",
                         "--out", tmp_path, *TINY)
    assert code == 0, err
    search = read(tmp_path / "digits/sigma0.25/budget0.05/arq-seed0.json")["search"]
    stats = search["rescore_certifier_stats"]
    assert search["rescore_n"] == 2000 and stats["incremental"] >= 24  # float reference and a candidate, 12 each
    assert stats.get("fallback", 0) == 0 and search["certifier_stats"].get("fallback", 0) == 0
    assert all(r["rescore_record"]["fallbacks"] == 0 for r in search["rescored"])
