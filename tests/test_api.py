"""arqbench as a library: the README's notebook example as written, certify() against an independent
computation, load_results' tidy columns, and python -m arqbench."""

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY
from scipy.stats import beta, norm

import arqbench
from arqbench.errors import ArqbenchError
from arqbench.smoothing.core import ESTIMATION, SELECTION, generator, sample_predictions

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def notebook() -> str:
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README, flags=re.S) if b.startswith("# notebook")]
    assert blocks, "README has no ```python block starting with '# notebook'"
    return blocks[0]


def test_the_readme_notebook_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(notebook(), "README notebook", "exec"), scope)
    results, cells, images, certs = scope["results"], scope["cells"], scope["images"], scope["certs"]
    assert list(results.method) == ["fp32", "hawq", "uniform"] and set(results.status) == {"ok"}
    assert results.equals(cells)  # run() returns what load_results reads back
    assert len(images) == 3 * 20 and set(images.method) == {"fp32", "hawq", "uniform"}
    assert {"acr", "acr_low", "acr_high", "smoothed_acc", "cert_at_0.25", "bitops_fraction", "model_path"} <= set(cells)
    assert cells.loc[cells.method == "fp32", "model_path"].isna().all()  # the float row saves no model
    assert len(certs) == 20 and certs.summary([0.25])["images"] == 20
    assert (tmp_path / "notebook-results").is_dir()
    with torch.no_grad():  # the trained model, not an untrained one whose constant predictions agree with anything
        accuracy = (scope["float_model"](scope["noisy"]).argmax(1) == scope["labels"][64:264]).float().mean()
    assert accuracy >= 0.8 and scope["agree"] >= 0.8
    assert f"4-bit model: {scope['agree']:.0%} of 200 noisy test inputs" in capsys.readouterr().out


class Linear(torch.nn.Module):
    """f(x) = 1 if w.x + b > 0 else 0: the smoothed classifier's exact radius is |w.x + b| / ||w||."""

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.w = torch.nn.Parameter(w.clone(), requires_grad=False)
        self.b = b

    def forward(self, x):
        score = x.flatten(1) @ self.w + self.b
        return torch.stack([-score, score], dim=1)


def test_certify_is_cohens_certify_counted_independently():
    torch.manual_seed(0)
    w = torch.randn(16)
    model = Linear(w, 0.1)
    inputs = torch.randn(6, 1, 4, 4) * 0.3
    labels = (inputs.flatten(1) @ w + 0.1 > 0).long()
    sigma, n0, n, alpha = 0.5, 50, 400, 0.001
    certs = arqbench.certify(model, inputs, labels, sigma, n0=n0, n=n, alpha=alpha, batch_size=128, seed=3)
    for i, cert in enumerate(certs):
        # the same noise streams, counted here by hand
        selection = sample_predictions(model, inputs[i:i + 1], n0, sigma, 128, [generator("cpu", 3, i, SELECTION)])
        c_a = int(torch.bincount(selection[0], minlength=2).argmax())
        estimation = sample_predictions(model, inputs[i:i + 1], n, sigma, 128, [generator("cpu", 3, i, ESTIMATION)])
        k = int((estimation[0] == c_a).sum())
        p_lower = beta.ppf(alpha, k, n - k + 1) if k else 0.0
        assert cert.count == k and math.isclose(cert.p_lower, p_lower, rel_tol=1e-12)
        if p_lower >= 0.5:
            assert cert.prediction == c_a and math.isclose(cert.radius, sigma * norm.ppf(p_lower), rel_tol=1e-12)
            exact = abs(float(inputs[i].flatten() @ w + 0.1)) / float(w.norm())
            assert cert.radius <= exact + 1e-9  # sound: never beyond the decision boundary
        else:
            assert cert.prediction == -1 and cert.radius == 0.0
    frame = certs.to_pandas()
    assert list(frame["index"]) == list(range(6)) and list(frame.label) == labels.tolist()
    summary = certs.summary([0.1])
    radii = [c.radius if c.correct else 0.0 for c in certs]
    assert math.isclose(summary["acr"], sum(radii) / 6)
    assert summary["acr_low"] <= summary["acr"] <= summary["acr_high"]
    assert summary["certified_acc"]["0.1"] == sum(r >= 0.1 for r in radii) / 6


def test_incremental_certification_through_the_api_needs_its_reference():
    torch.manual_seed(1)
    w = torch.randn(16)
    model = Linear(w, 0.0)
    inputs, labels = torch.randn(4, 1, 4, 4), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ArqbenchError, match="reference"):
        arqbench.certify(model, inputs, labels, 0.25, n0=20, n=200, certifier="irs")
    same = arqbench.certify(model, inputs, labels, 0.25, n0=20, n=200, certifier="irs", reference=Linear(w, 0.0),
                            options={"n_p": 0.5, "gamma": 1.0})
    assert all(c.details.get("disagreements") == 0 for c in same)  # the reference computes the same function


@pytest.mark.parametrize("kwargs,message", [
    ({"sigma": 0}, "sigma must be a positive"),
    ({"sigma": 0.25, "n": 0}, "n must be a positive integer"),
    ({"sigma": 0.25, "alpha": 0.7}, "alpha must be in"),
    ({"sigma": 0.25, "certifier": "nope"}, "unknown certifier 'nope'"),
])
def test_certify_refuses_bad_settings_with_one_line(kwargs, message):
    with pytest.raises(ArqbenchError, match=message):
        arqbench.certify(Linear(torch.ones(16), 0.0), torch.zeros(2, 1, 4, 4), [0, 1], **kwargs)


def test_run_refuses_an_unknown_setting_before_any_work(tmp_path):
    with pytest.raises(ArqbenchError, match="unknown setting 'sigmas'.*known: .*sigma"):
        arqbench.run(sigmas=[0.25], out=tmp_path)
    assert not any(tmp_path.iterdir())


def test_run_takes_what_the_command_takes(tmp_path):
    flags = dict(zip([f.lstrip("-").replace("-", "_") for f in TINY[::2]], TINY[1::2]))
    table = arqbench.run(methods="uniform", budget=0.05, out=tmp_path, save_models=False, **flags)
    assert list(table.method) == ["fp32", "uniform"] and table.n.tolist() == [200, 200]
    assert table.model_path.isna().all() and not list(tmp_path.rglob("*.pt"))
    assert arqbench.load_results(tmp_path / "digits/sigma0.25/budget0.05/uniform-seed0.json").acr.item() == \
        table.acr.iloc[1]


def test_run_is_the_command_without_its_argument_parser(cli, tmp_path, monkeypatch):
    """arqbench.run and `arqbench run` call one use case: the library parses no argv, and both record the same
    run_config for the same settings (a sweep file, switches, plugin options and an alias among them)."""
    import argparse
    import json

    sweep = tmp_path / "sweep.toml"
    sweep.write_text('methods = ["uniform"]\nbudget = 0.05\nsigma = [0.5]\n[options.irs]\nn_p = 0.1\ngamma = 0.98\n')
    (tmp_path / "cli").mkdir(), (tmp_path / "api").mkdir()
    monkeypatch.chdir(tmp_path / "cli")
    code, _, err = cli("run", "--config", sweep, "--sigma", "0.25", "--no-save-models", "--quantize-ends",
                       "--episodes", "2", "--option", "irs.n_p=0.2", "--out", "results", *TINY)
    assert code == 0, err

    def refuse(*args, **kwargs):
        raise AssertionError("arqbench.run parsed a command line")

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", refuse)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", refuse)
    monkeypatch.chdir(tmp_path / "api")
    flags = dict(zip([f.lstrip("-").replace("-", "_") for f in TINY[::2]], TINY[1::2]))
    table = arqbench.run(sweep, sigma=0.25, save_models=False, keep_ends=False, episodes=2,
                         options={"irs": {"n_p": 0.2}}, out="results", **flags)
    assert list(table.method) == ["fp32", "uniform"] and table.sigma.tolist() == [0.25, 0.25]

    def run_config(where):
        return json.loads((tmp_path / where / "results/digits/sigma0.25/budget0.05/uniform-seed0.json").read_text())[
            "run_config"]

    recorded = run_config("cli")
    assert recorded == run_config("api")
    assert recorded["keep-ends"] is False and recorded["save-models"] is False and recorded["episodes"] == 2
    assert recorded["options"] == {"irs": {"n_p": 0.2, "gamma": 0.98}} and recorded["sigma"] == [0.25]
    assert recorded["methods"] == ["uniform"] and recorded["config"] == str(sweep) and recorded["n"] == 200


@pytest.mark.parametrize("setting,flags", [
    ({"threads": 0}, ["--threads", "0"]),
    ({"sigma": "abc"}, ["--sigma", "abc"]),
    ({"n": "many"}, ["--n", "many"]),
    ({"precision": "fp64"}, ["--precision", "fp64"]),
    ({"methods": "nope"}, ["--methods", "nope"]),
    ({"options": {"uniform": {"nope": 1}}}, ["--option", "uniform.nope=1"]),
])
def test_run_refuses_what_the_command_refuses_with_its_line(cli, tmp_path, setting, flags):
    code, _, err = cli("run", "--out", tmp_path / "results", "--methods", "uniform", "--budget", "0.05", *TINY, *flags)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    tiny = dict(zip([f.lstrip("-").replace("-", "_") for f in TINY[::2]], TINY[1::2]))
    with pytest.raises(ArqbenchError) as raised:
        arqbench.run(**{"methods": "uniform", "budget": 0.05, "out": tmp_path / "results", **tiny, **setting})
    assert f"arqbench: error: {raised.value}" == err.strip()
    assert not (tmp_path / "results").exists()


def test_quantize_copies_and_quantizes_the_named_layers():
    model = arqbench.plugins.create("benchmark", "digits").build_model().eval()
    batch = torch.rand(32, 1, 8, 8)
    quantized = arqbench.quantize(model, {"net.fc": (2, 2)}, calibration=batch)
    assert type(quantized.net.fc).__name__ == "FakeQuant" and type(model.net.fc).__name__ == "Linear"
    assert type(quantized.net.stem).__name__ == "Conv2d"  # not in the policy: stays float
    with torch.no_grad():
        assert not torch.equal(quantized(batch), model(batch))
    with pytest.raises(ArqbenchError, match="net.nope is not a Conv2d/Linear layer"):
        arqbench.quantize(model, {"net.nope": (4, 4)}, calibration=batch)
    with pytest.raises(ArqbenchError, match="bits"):
        arqbench.quantize(model, 9, calibration=batch)


def test_python_dash_m_arqbench_is_the_command():
    result = subprocess.run([sys.executable, "-m", "arqbench", "--version"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == f"arqbench {arqbench.__version__}"
