"""The GPU path (--device cuda): skipped on machines without CUDA, run on GPU machines."""

import json

import pytest
import torch
from conftest import TINY
from test_smoothing import linear_classifier

from arqbench.smoothing.core import (
    SmoothingConfig,
    certify_many,
    generators,
    sample_predictions,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


def test_sampling_on_the_gpu_is_seeded_and_independent_of_batching():
    model = linear_classifier(torch.tensor([1.0, -1.0]), 0.1).to(CUDA)
    xs = torch.tensor([[0.2, 0.1], [-0.3, 0.4]], device=CUDA)
    a = sample_predictions(model, xs, 1000, 0.5, 300, generators(CUDA, 1, [0, 1], 1))
    b = sample_predictions(model, xs, 1000, 0.5, 1000, generators(CUDA, 1, [0, 1], 1))
    assert a.device.type == "cuda" and torch.equal(a, b)


def test_certification_on_the_gpu_agrees_with_the_exact_radius():
    w = torch.tensor([0.6, 0.8])
    model = linear_classifier(w, 0.0).to(CUDA)
    config = SmoothingConfig(sigma=1.0, n0=100, n=200_000, alpha=0.001, batch_size=50_000, seed=0)
    cert = certify_many(model, [(0, (w * 0.8).to(CUDA), 1)], config, 2)[0]
    assert cert.prediction == 1 and cert.radius <= 0.8 and cert.radius == pytest.approx(0.8, abs=0.03)


def test_a_sweep_runs_on_the_gpu(cli, tmp_path):
    code, _, err = cli("run", "--device", "cuda", "--methods", "uniform,arq", "--episodes", "2",
                       "--option", "arq.warmup=1", "--option", "arq.images=4", "--budget", "0.05",
                       "--out", tmp_path, *TINY)
    assert code == 0, err
    record = json.loads((tmp_path / "digits/sigma0.25/budget0.05/arq-seed0.json").read_text())
    assert record["status"] == "ok" and record["versions"]["device"] == torch.cuda.get_device_name(0)
