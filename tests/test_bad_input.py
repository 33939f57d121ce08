"""Every wrong input a user can type gets one clear line on stderr, a non-zero exit, no traceback, and
changes no file in --out (a results directory holding finished cells)."""

import json
import shutil
import sys

import pytest
import torch
from conftest import TINY, run_subprocess

from arqbench.cli import main

OUT = "{out}"  # stands for the populated results directory
MISSING = "{tmp}/missing"


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    """A results directory with finished cells, plus files to pass as bad inputs."""
    root = tmp_path_factory.mktemp("bad-input")
    out = root / "results"
    assert main(["run", "--methods", "uniform", "--budget", "0.05", *TINY, "--out", str(out)]) == 0
    checkpoint = root / "model.pt"
    torch.save({"state_dict": {"weight": torch.zeros(3)}}, checkpoint)
    (root / "truncated.pt").write_bytes(checkpoint.read_bytes()[:40])
    (root / "other-arch.pt").write_bytes(checkpoint.read_bytes())
    (root / "other-model-policy.json").write_text(json.dumps({"policy": {"conv1": [8, 8], "layer1.0.conv1": [4, 8]}}))
    (root / "broken.json").write_text('{"policy": {"net.stem": [8, ')
    (root / "bits-out-of-range.json").write_text(json.dumps(
        {"policy": {k: [1, 8] for k in json.loads((out / "digits/sigma0.25/budget0.05/uniform-seed0.json")
                                                  .read_text())["policy"]}}))
    (root / "a-directory").mkdir()
    (root / "a-file").write_text("not a directory")
    return root


def paths(text: str, root) -> str:
    return text.replace(OUT, str(root / "results")).replace("{tmp}", str(root))


RUN = ["run", "--out", OUT, "--methods", "uniform", "--budget", "0.05", *TINY]

CASES = {
    # unknown names
    "unknown method": (RUN + ["--methods", "uniform,nope"], "unknown search 'nope'; available:"),
    "unknown benchmark": (RUN + ["--benchmarks", "nope"], "unknown benchmark 'nope'; available:"),
    "unknown certifier": (RUN + ["--certifier", "nope"], "unknown certifier 'nope'; available:"),
    "unknown quantizer": (RUN + ["--quantizer", "nope"], "unknown quantizer 'nope'; available:"),
    "unknown cost model": (RUN + ["--cost-model", "nope"], "unknown cost model 'nope'; available:"),
    "unknown executor": (RUN + ["--executor", "nope"], "invalid choice: 'nope'"),
    "unknown preset": (RUN + ["--preset", "nope"], "invalid choice: 'nope'"),
    "unknown command": (["nope"], "invalid choice: 'nope'"),
    "no command": ([], "the following arguments are required"),
    "unknown flag": (RUN + ["--sigmas", "0.25"], "unrecognized arguments: --sigmas"),
    "option for an unknown plugin": (RUN + ["--option", "nope.warmup=5"],
                                     "--option nope.KEY=VALUE names no registered plugin"),
    "option a plugin does not take": (RUN + ["--option", "uniform.warmup=5"],
                                      "search 'uniform' has no option 'warmup'; its options: none"),
    "option value a plugin rejects": (RUN + ["--option", "irs.gamma=2"], "irs.gamma must be in [0.5, 1], got 2"),
    "malformed option": (RUN + ["--option", "haq-warmup"], "--option expects NAME.KEY=VALUE"),
    "unknown certifier to compare": (["certify", "--certifiers", "rs,nope", *TINY], "unknown certifier 'nope'"),
    "certify an unknown benchmark": (["certify", "--benchmark", "nope"], "unknown benchmark 'nope'"),
    "train an unknown benchmark": (["train", "--benchmark", "nope"], "unknown benchmark 'nope'"),
    # malformed lists and numbers
    "empty name in a list": (RUN + ["--methods", "uniform,,haq"], "--methods expects comma-separated names"),
    "a word in a number list": (RUN + ["--sigma", "0.25,x"], "--sigma expects comma-separated numbers, got '0.25,x'"),
    "a percent budget": (RUN + ["--budget", "2.5%"], "--budget expects comma-separated numbers"),
    "an empty list": (RUN + ["--sigma", ","], "--sigma needs at least one value"),
    "a fractional seed": (RUN + ["--seed", "1.5"], "--seed expects comma-separated integers"),
    "a word for an integer": (RUN + ["--n", "ten"], "argument --n: invalid int value: 'ten'"),
    "two sigmas naming one file": (RUN + ["--sigma", "0.25,0.2500001"], "would share the result file"),
    # values out of range
    "sigma zero": (RUN + ["--sigma", "0"], "--sigma must be a positive number, got 0.0"),
    "sigma negative": (RUN + ["--sigma", "-0.5"], "--sigma must be a positive number, got -0.5"),
    "sigma nan": (RUN + ["--sigma", "nan"], "--sigma must be a positive number, got nan"),
    "sigma infinite": (RUN + ["--sigma", "inf"], "--sigma must be a positive number, got inf"),
    "certify sigma zero": (["certify", "--sigma", "0"], "--sigma must be a positive number"),
    "train sigma negative": (["train", "--sigma", "-1"], "--sigma must be a positive number"),
    "train zero epochs": (["train", "--epochs", "0"], "--epochs must be a positive integer, got 0"),
    "budget zero": (RUN + ["--budget", "0"], "--budget must be a fraction of the float cost in (0, 1], got 0.0"),
    "budget above one": (RUN + ["--budget", "1.5"], "in (0, 1], got 1.5"),
    "budget negative": (RUN + ["--budget", "-0.1"], "in (0, 1], got -0.1"),
    "budget nan": (RUN + ["--budget", "nan"], "in (0, 1], got nan"),
    "budget infeasible": (RUN + ["--budget", "0.001"], "--budget 0.001 is below the cheapest allowed policy"),
    "n zero": (RUN + ["--n", "0"], "--n must be a positive integer, got 0"),
    "n0 negative": (RUN + ["--n0", "-5"], "--n0 must be a positive integer, got -5"),
    "test images zero": (RUN + ["--test-images", "0"], "--test-images must be a positive integer"),
    "batch size zero": (RUN + ["--batch-size", "0"], "--batch-size must be a positive integer"),
    "episodes zero": (RUN + ["--episodes", "0"], "episodes must be a positive integer, got 0"),
    "alpha above one half": (RUN + ["--alpha", "0.7"], "--alpha must be in (0, 0.5), got 0.7"),
    "alpha nan": (RUN + ["--alpha", "nan"], "--alpha must be in (0, 0.5), got nan"),
    "np above one": (RUN + ["--np", "2"], "irs.n_p is a fraction of n in (0, 1], got 2.0"),
    "negative fine-tune epochs": (RUN + ["--finetune-epochs", "-1"], "--finetune-epochs must be >= 0"),
    "negative workers": (RUN + ["--workers", "-1"], "--workers must be >= 0, got -1"),
    "zero certification shards": (RUN + ["--certify-shards", "0"], "--certify-shards must be a positive integer"),
    "ray cpus per task zero": (RUN + ["--executor", "ray", "--cpus-per-task", "0"], "--cpus-per-task must be > 0"),
    "an address without ray": (RUN + ["--address", "127.0.0.1:6379"], "--address names a Ray cluster; add --executor ray"),
    "an unknown device": (RUN + ["--device", "gpu0"], "--device expects cpu, cuda or cuda:N, got 'gpu0'"),
    # paths and files
    "missing checkpoint": (RUN + ["--checkpoint", MISSING], f"--checkpoint {MISSING} does not exist"),
    "checkpoint is a directory": (RUN + ["--checkpoint", "{tmp}/a-directory"], "is not a file"),
    "truncated checkpoint": (RUN + ["--checkpoint", "{tmp}/truncated.pt"], "is corrupt or not a PyTorch checkpoint"),
    "checkpoint of another model": (RUN + ["--checkpoint", "{tmp}/other-arch.pt"], "does not fit"),
    "missing data root": (RUN + ["--data-root", MISSING], f"--data-root {MISSING} is not a directory"),
    "data root is a file": (RUN + ["--data-root", "{tmp}/a-file"], "is not a directory"),
    "missing policy": (["certify", "--policy", MISSING, *TINY], "does not exist"),
    "policy is a directory": (["certify", "--policy", "{tmp}/a-directory", *TINY], "a-directory"),
    "policy for another model": (["certify", "--policy", "{tmp}/other-model-policy.json", *TINY],
                                 "does not fit this model"),
    "policy with bits out of range": (["certify", "--policy", "{tmp}/bits-out-of-range.json", *TINY],
                                      "must be in [2, 8]"),
    "truncated policy": (["certify", "--policy", "{tmp}/broken.json", *TINY], "broken.json"),
    "certify a truncated checkpoint": (["certify", "--checkpoint", "{tmp}/truncated.pt", *TINY], "is corrupt"),
    "missing results for a leaderboard": (["leaderboard", "--results", MISSING], "does not exist"),
    "results dir is a file": (["leaderboard", "--results", "{tmp}/a-file"], "is not a directory"),
    "results computed with other settings": (RUN + ["--n", "300"], "was computed with other settings"),
}

# A representative subset also runs as a user would (a real process: a traceback would show).
IN_A_PROCESS = ["unknown method", "a word in a number list", "sigma nan", "budget infeasible", "truncated checkpoint",
                "policy for another model"]


def snapshot(root) -> dict:
    """Every file and folder under ``root`` with its bytes and modification time."""
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None for p in sorted(root.rglob("*"))}


def assert_one_clear_line(code: int, err: str, expected: str) -> None:
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("arqbench: error: "), err
    assert expected in lines[0], (expected, lines[0])


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_line_and_changes_nothing(case, populated, cli, tmp_path, monkeypatch):
    args, expected = CASES[case]
    if case == "ray cpus per task zero":
        pytest.importorskip("ray")
    monkeypatch.chdir(tmp_path)  # nothing may be written in the working directory either
    before = snapshot(populated)
    code, out, err = cli(*[paths(a, populated) for a in args])
    assert_one_clear_line(code, err, paths(expected, populated))
    assert snapshot(populated) == before
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("case", IN_A_PROCESS)
def test_bad_input_in_a_real_process(case, populated, tmp_path):
    args, expected = CASES[case]
    before = snapshot(populated)
    result = run_subprocess(*[paths(a, populated) for a in args], cwd=tmp_path)
    assert_one_clear_line(result.returncode, result.stderr, paths(expected, populated))
    assert snapshot(populated) == before
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("damage", ["truncated", "not a result", "empty"])
def test_a_corrupt_result_file_in_out_is_one_clear_line_and_changes_nothing(damage, populated, cli, tmp_path):
    out = tmp_path / "results"
    shutil.copytree(populated / "results", out)
    victim = out / "digits/sigma0.25/budget0.05/uniform-seed0.json"
    victim.write_text({"truncated": victim.read_text()[:100], "not a result": "[1, 2, 3]", "empty": ""}[damage])
    before = snapshot(out)
    code, _, err = cli("run", "--out", out, "--methods", "uniform", "--budget", "0.05", *TINY)
    expected = "is not an arqbench result" if damage == "not a result" else "is not valid JSON"
    assert_one_clear_line(code, err, f"result file {victim} {expected}")
    assert snapshot(out) == before


def test_the_ray_executor_without_ray_installed_says_how_to_install_it(populated, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    before = snapshot(populated)
    code, _, err = cli(*[paths(a, populated) for a in RUN], "--executor", "ray")
    assert_one_clear_line(code, err, "--executor ray needs Ray, which is not installed; pip install 'arqbench[ray]'")
    assert snapshot(populated) == before
