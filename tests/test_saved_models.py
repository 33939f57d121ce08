"""Saved quantized models: a reloaded model is the certified one bit for bit, `arqbench certify --model`
reproduces its cell without fine-tuning, files that are not models are refused with one line, and
--no-save-models keeps result folders small."""

import json

import pytest
import torch
from conftest import TINY

from arqbench.errors import ArqbenchError
from arqbench.pipeline import saved
from arqbench.pipeline.cell import CellRun
from arqbench.pipeline.config import create_benchmark, resolve
from arqbench.pipeline.prepare import prepare
from arqbench.pipeline.results import Cell

# mixed bits, 2-bit activations included; the stem reads signed (normalised, noisy) input
POLICY = {"net.stem": (8, 3), "net.block1.conv1": (2, 2), "net.block1.conv2": (5, 4), "net.block2.conv1": (3, 6),
          "net.block2.conv2": (4, 2), "net.block2.shortcut.0": (3, 6), "net.fc": (6, 5)}
PROTOCOL = {"n0": 20, "n": 200, "test_images": 8, "batch_size": 200, "finetune_epochs": 1}


@pytest.fixture(scope="module")
def digits():
    benchmark = create_benchmark("digits")
    protocol = resolve(benchmark, PROTOCOL)
    return benchmark, prepare(benchmark, 0.25, protocol, torch.device("cpu"))


@pytest.mark.parametrize("quantizer", ["linear", "lsq"])
def test_a_reloaded_model_computes_the_certified_function_bit_for_bit(digits, quantizer, tmp_path):
    benchmark, prepared = digits
    protocol = resolve(benchmark, {**PROTOCOL, "quantizer": quantizer})
    path = tmp_path / "cell.pt"
    runner = CellRun(Cell("digits", 0.25, 0.1, "uniform", 0), prepared, protocol, torch.device("cpu"), path)
    trained = runner.train(POLICY)
    record = runner.record(trained, [runner.certify(trained.model)])
    assert record["model"] == {"path": "cell.pt", "bytes": path.stat().st_size}

    loaded = saved.load(path)
    assert loaded.policy == POLICY and loaded.quantizer == quantizer and loaded.sigma == 0.25
    noisy = torch.rand(64, 1, 8, 8) + 0.25 * torch.randn(64, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.model(noisy), trained.model(noisy))
    again, *_ = runner.certify(loaded.model)
    strip = [{k: v for k, v in c.as_dict().items() if k != "seconds"} for c in again]
    assert strip == [{k: v for k, v in c.items() if k != "seconds"} for c in record["certificates"]]


def test_the_empty_calibration_alone_is_not_the_model(digits, tmp_path):
    """What makes the reload exact is the state_dict with its hooks, not the rebuild: without loading, the
    activation grids differ (so the bit-for-bit test above can fail)."""
    benchmark, prepared = digits
    protocol = resolve(benchmark, PROTOCOL)
    runner = CellRun(Cell("digits", 0.25, 0.1, "uniform", 0), prepared, protocol, torch.device("cpu"),
                     tmp_path / "m.pt")
    trained = runner.train(POLICY)
    runner.record(trained, [runner.certify(trained.model)])
    rebuilt = protocol.create("quantizer", "linear").quantize(benchmark.build_model(), POLICY, [])
    rebuilt.load_state_dict(trained.model.state_dict())
    assert rebuilt.net.stem._act_params == trained.model.net.stem._act_params
    fresh = protocol.create("quantizer", "linear").quantize(benchmark.build_model(), POLICY, [])
    assert fresh.net.stem._act_params != trained.model.net.stem._act_params


def test_certify_model_reproduces_its_cell_without_fine_tuning(cli, tmp_path, monkeypatch):
    code, _, err = cli("run", "--methods", "uniform", "--budget", "0.05", "--out", tmp_path, *TINY)
    assert code == 0, err
    result = tmp_path / "digits/sigma0.25/budget0.05/uniform-seed0.json"
    model = result.with_suffix(".pt")
    record = json.loads(result.read_text())
    assert record["model"] == {"path": "uniform-seed0.pt", "bytes": model.stat().st_size}
    assert not (tmp_path / "digits/sigma0.25/fp32-seed0.pt").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("certify --model must not train")

    monkeypatch.setattr("arqbench.pipeline.cell.finetune", no_training)
    code, out, err = cli("certify", "--model", model)
    assert code == 0, err
    assert "re-certification against" in out and " NO " not in out and out.count(" yes ") >= 10


def test_files_that_are_not_models_are_refused_with_one_line(cli, tmp_path):
    (tmp_path / "policy.json").write_text('{"policy": {}}')
    torch.save({"state_dict": {}}, tmp_path / "weights.pt")
    for path, what in [(tmp_path / "missing.pt", "does not exist"), (tmp_path / "policy.json", "not an arqbench model"),
                       (tmp_path / "weights.pt", "not an arqbench model")]:
        code, out, err = cli("certify", "--model", path)
        assert code == 2 and what in err and len(err.strip().splitlines()) == 1, err
        with pytest.raises(ArqbenchError, match=what):
            saved.load(path)


def test_no_save_models_writes_none_and_removes_a_stale_one(cli, tmp_path):
    code, _, err = cli("run", "--methods", "uniform", "--budget", "0.05", "--out", tmp_path, *TINY)
    assert code == 0, err
    model = tmp_path / "digits/sigma0.25/budget0.05/uniform-seed0.pt"
    assert model.is_file()
    code, _, err = cli("run", "--methods", "uniform", "--budget", "0.05", "--out", tmp_path, "--force",
                       "--no-save-models", *TINY)
    assert code == 0, err
    assert not model.exists() and "model" not in json.loads(model.with_suffix(".json").read_text())


def test_saved_files_load_without_unpickling_code(tmp_path, digits):
    """The file is plain data (weights_only), so a model from someone else's results is safe to load."""
    benchmark, prepared = digits
    protocol = resolve(benchmark, PROTOCOL)
    runner = CellRun(Cell("digits", 0.25, 0.1, "uniform", 0), prepared, protocol, torch.device("cpu"), tmp_path / "m.pt")
    trained = runner.train(POLICY)
    runner.record(trained, [runner.certify(trained.model)])
    data = torch.load(tmp_path / "m.pt", weights_only=True)
    assert data["format"] == saved.FORMAT and data["benchmark"] == "digits" and data["quantizer"] == "linear"
    assert {"net.stem.a_min", "net.stem.a_max", "net.stem.layer.weight", "mean", "std"} <= set(data["state_dict"])
