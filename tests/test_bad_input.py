"""Every wrong input a user can type gets one clear line on stderr, exit status 2, no traceback, and changes no
file in --out (a results directory holding finished cells).

Two halves. A table of the mistakes users make, each with the words its message must hold. Then generated
hostile inputs (hypothesis, derandomized, small example budgets): every file the tool reads (policy JSON,
result JSON, checkpoint, CIFAR batch, ImageNet folder) is fed garbage, truncations and wrong-but-valid
structures, and the numeric and list flags get generated values. A generated input that passes every check
reaches a stub standing where model work would begin (``Accepted``), so each case costs milliseconds; an
oracle written here, independently of the code under test, says which inputs must be accepted.
"""

import io
import json
import math
import pickle
import random
import re
import shutil
import sys

import numpy as np
import pytest
import torch
from conftest import TINY, run_subprocess
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

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
    torch.save({"state_dict": RunsCode()}, root / "runs-code.pt")
    (root / "random-bytes.pt").write_bytes(random.Random(0).randbytes(500))
    (root / "infinite-bits.json").write_text('{"policy": {"net.stem": [Infinity, 8]}}')
    record = json.loads((out / "digits/sigma0.25/budget0.05/uniform-seed0.json").read_text())
    (root / "damaged-result.json").write_text(json.dumps({**record, "sigma": "0.25"}))
    return root


class RunsCode:
    """A pickled object whose loading would call a function: what an unsafe checkpoint holds."""

    def __reduce__(self):
        return (print, ("this ran on load",))


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
    "unknown flag": (RUN + ["--sigmas", "0.25"], "unrecognized arguments: --sigmas 0.25 (see arqbench run --help)"),
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
    "a negative seed": (RUN + ["--seed", "3,-1"], "--seed must be an integer in [0, 4294967295], got -1"),
    "a seed numpy cannot take": (RUN + ["--seed", str(2**32)], "--seed must be an integer in [0, 4294967295]"),
    "a negative seed to certify": (["certify", "--seed", "-2", *TINY], "--seed must be an integer in [0,"),
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
    "a device arqbench does not run on": (RUN + ["--device", "meta"], "--device expects cpu, cuda or cuda:N, got 'meta'"),
    # limits the data cannot meet
    "more test images than the split holds": (RUN + ["--test-images", "100000000", "--out", MISSING],
                                              "--test-images 100000000 is more than digits has: its test split "
                                              "holds 360 images; pass --test-images 360 or fewer"),
    # paths and files
    "missing checkpoint": (RUN + ["--checkpoint", MISSING], f"--checkpoint {MISSING} does not exist"),
    "missing published base models": (RUN + ["--base-models", MISSING], f"--base-models {MISSING} is not a directory"),
    "certify from missing published base models": (["certify", "--base-models", MISSING, *TINY],
                                                   f"--base-models {MISSING} is not a directory"),
    "checkpoint is a directory": (RUN + ["--checkpoint", "{tmp}/a-directory"], "is not a file"),
    "truncated checkpoint": (RUN + ["--checkpoint", "{tmp}/truncated.pt"], "is corrupt or not a PyTorch checkpoint"),
    "checkpoint of random bytes": (RUN + ["--checkpoint", "{tmp}/random-bytes.pt"],
                                   "is corrupt or not a PyTorch checkpoint (it is neither a zip archive nor a pickle"),
    "checkpoint with code in it": (RUN + ["--checkpoint", "{tmp}/runs-code.pt"],
                                   "is not a plain weights file: it holds Python objects (builtins.print), and loading "
                                   "those could run code, so it is refused; if you trust its source"),
    "train from a checkpoint with code in it": (["train", "--checkpoint", "{tmp}/runs-code.pt"], "could run code"),
    "train from a missing checkpoint": (["train", "--checkpoint", MISSING], "does not exist"),
    "checkpoint of another model": (RUN + ["--checkpoint", "{tmp}/other-arch.pt"], "does not fit"),
    "missing data root": (RUN + ["--data-root", MISSING], f"--data-root {MISSING} is not a directory"),
    "data root is a file": (RUN + ["--data-root", "{tmp}/a-file"], "is not a directory"),
    "out is a file": (RUN + ["--out", "{tmp}/a-file"], "--out {tmp}/a-file is a file; pass a directory"),
    "out under a file": (RUN + ["--out", "{tmp}/a-file/results"], "lies under {tmp}/a-file, which is a file"),
    "leaderboard out is a file": (["leaderboard", "--results", OUT, "--out", "{tmp}/a-file"], "is a file"),
    "profile out is a file": (["profile", "--out", "{tmp}/a-file"], "--out {tmp}/a-file is a file"),
    "cohen out is a directory": (["certify", "--cohen-out", "{tmp}/a-directory", *TINY], "is a directory"),
    "a paper benchmark without its data": (RUN + ["--benchmarks", "resnet20-cifar10", "--data-root",
                                                  "{tmp}/a-directory"], "nothing to run: resnet20-cifar10: CIFAR-10 not "
                                                                        "found: {tmp}/a-directory/cifar-10-batches-py"),
    "missing policy": (["certify", "--policy", MISSING, *TINY], "does not exist"),
    "policy is a directory": (["certify", "--policy", "{tmp}/a-directory", *TINY], "a-directory"),
    "policy for another model": (["certify", "--policy", "{tmp}/other-model-policy.json", *TINY],
                                 "does not fit this model"),
    "policy with bits out of range": (["certify", "--policy", "{tmp}/bits-out-of-range.json", *TINY],
                                      "must be in [2, 8]"),
    "truncated policy": (["certify", "--policy", "{tmp}/broken.json", *TINY], "broken.json"),
    "policy with infinite bits": (["certify", "--policy", "{tmp}/infinite-bits.json", *TINY],
                                  "infinite-bits.json is not a policy: $['net.stem'][0] is number, not integer"),
    "damaged result file as policy": (["certify", "--policy", "{tmp}/damaged-result.json", *TINY],
                                      "damaged-result.json is damaged: $.sigma is string, not number"),
    "certify a truncated checkpoint": (["certify", "--checkpoint", "{tmp}/truncated.pt", *TINY], "is corrupt"),
    "missing results for a leaderboard": (["leaderboard", "--results", MISSING], "does not exist"),
    "results dir is a file": (["leaderboard", "--results", "{tmp}/a-file"], "is not a directory"),
    "results computed with other settings": (RUN + ["--n", "300"], "was computed with other settings"),
}

# A representative subset also runs as a user would (a real process: a traceback would show).
IN_A_PROCESS = ["unknown method", "sigma nan", "budget infeasible", "truncated checkpoint", "policy for another model",
                "unknown flag", "out is a file"]


def snapshot(root) -> dict:
    """Every file and folder under ``root`` with its bytes and modification time."""
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None for p in sorted(root.rglob("*"))}


def assert_one_clear_line(code: int, err: str, expected: str) -> None:
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("arqbench: error: "), err
    assert not lines[0].startswith("arqbench: error: arqbench"), err  # no doubled prefix
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


# --- generated hostile inputs ---------------------------------------------------------------------------------

HOSTILE = settings(derandomize=True, database=None, deadline=None, max_examples=30,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                    max_leaves=10)


RUN_FRESH = ["run", "--methods", "uniform", "--budget", "0.05", *TINY]


class Accepted(Exception):
    """Raised where model work would begin: the input passed every check."""


@pytest.fixture
def no_model_work(monkeypatch, populated):
    """Stop at the first step of real work: running cells, a certify's fine-tune or evaluation, training."""
    from arqbench.models import base_model
    from arqbench.pipeline import cell, executors

    def stop(*args, **kwargs):
        raise Accepted

    for owner, name in ((executors.LocalExecutor, "run"), (cell.CellRun, "train"), (base_model, "train")):
        monkeypatch.setattr(owner, name, stop)


class Tried:
    """Counts the generated cases each property ran (reported with -s at the end of the module)."""

    counts: dict[str, int] = {}

    @classmethod
    def one(cls, name: str) -> None:
        cls.counts[name] = cls.counts.get(name, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def report_tried():
    yield
    if Tried.counts:
        print(f"\ngenerated hostile cases: {sum(Tried.counts.values())} ({Tried.counts})")


def attempt(capsys, *args) -> tuple[int | str, str]:
    """Run the CLI in-process: (exit status, or "accepted" where model work would begin; stderr)."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except Accepted:
        code = "accepted"
    event(f"outcome: {code}")
    return code, capsys.readouterr().err


def assert_refused(code, err: str, *named) -> str:
    """Exit status 2 and one line that names each of ``named`` (the file or value at fault)."""
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("arqbench: error: "), err
    for thing in named:
        assert str(thing) in lines[0], (thing, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def digits_facts():
    """What the oracles need to know about digits, computed here from first principles."""
    from arqbench import plugins
    from arqbench.quantization.layers import profile_layers

    bench = plugins.create("benchmark", "digits")
    layers = profile_layers(bench.build_model(), bench.input_shape)
    ends = {layers[0].name, layers[-1].name}  # held at 8/8 bits
    cheapest = sum(l.macs * (8 * 8 if l.name in ends else 2 * 8) for l in layers)
    return {"test_images": len(bench.splits(None).test), "layers": [l.name for l in layers],
            "budget_floor": cheapest / sum(l.macs * 32 * 32 for l in layers)}


# numeric and list flags: (kind of value, how the oracle judges it)
FLAGS = {"--n0": "count", "--n": "count", "--test-images": "test images", "--batch-size": "count",
         "--episodes": "count", "--certify-shards": "count", "--finetune-epochs": "natural", "--workers": "natural",
         "--alpha": "alpha", "--np": "fraction", "--sigma": "sigmas", "--budget": "budgets", "--seed": "seeds",
         "--device": "device"}
NUMBER_TEXT = st.one_of(st.integers(-3, 400).map(str), st.integers().map(str),
                        st.floats(allow_nan=True, allow_infinity=True).map(str), st.floats(0, 1).map(str),
                        st.sampled_from(["", " ", "1e400", "-0", "0x10", "1_000", " 7 ", "٣", "½", "2.5%", "1,5"]),
                        TEXT)


def as_number(text: str, kind: type):
    try:
        return kind(text)
    except ValueError:
        return None


DEVICES = st.sampled_from(["cpu", "cpu:0", "cpu:1", "cuda", "cuda:0", "cuda:7", "cuda:-1", "meta", "mps", "xpu", "gpu0",
                           "CPU", " cpu", "cpu:x", ""]) | TEXT


def should_accept(kind: str, text: str, facts: dict) -> bool:
    """The oracle: is this value a valid setting (what the documentation promises to take)?"""
    if kind == "device":  # cpu, cuda or cuda:N, and CUDA only where there is that device
        cuda = re.fullmatch(r"cuda(:(\d))?", text)
        return bool(re.fullmatch(r"cpu(:\d)?", text) or cuda and torch.cuda.is_available()
                    and int(cuda.group(2) or 0) < torch.cuda.device_count())
    if kind in ("sigmas", "budgets", "seeds"):
        items = [v for v in text.split(",") if v.strip()]
        values = [as_number(v, int if kind == "seeds" else float) for v in items]
        if not values or None in values:
            return False
        if kind == "seeds":
            return all(0 <= v < 2**32 for v in values)
        if len({f"{v:g}" for v in values}) != len(set(values)):  # two values, one result file
            return False
        if kind == "sigmas":
            return all(0 < v < math.inf for v in values)
        return all(facts["budget_floor"] <= v <= 1 for v in values)
    value = as_number(text, float if kind in ("alpha", "fraction") else int)
    return value is not None and {
        "count": lambda v: v >= 1, "natural": lambda v: v >= 0, "test images": lambda v: 1 <= v <= facts["test_images"],
        "alpha": lambda v: 0 < v < 0.5, "fraction": lambda v: 0 < v <= 1}[kind](value)


@settings(HOSTILE, max_examples=60)
@given(flag=st.sampled_from(sorted(FLAGS)), data=st.data())
def test_generated_flag_values_are_taken_exactly_or_refused_in_one_line(flag, data, capsys, no_model_work, digits_facts,
                                                                        tmp_path_factory):
    Tried.one("flag values")
    text = data.draw(DEVICES if flag == "--device" else NUMBER_TEXT | st.lists(NUMBER_TEXT, max_size=4).map(",".join))
    out = tmp_path_factory.mktemp("flags") / "results"
    code, err = attempt(capsys, *RUN_FRESH, "--out", out, f"{flag}={text}")
    assert (code == "accepted") == should_accept(FLAGS[flag], text, digits_facts), (code, err)
    if code != "accepted":
        assert_refused(code, err)
    assert not out.exists()  # nothing written: no result, no claim, no folder


# --- policy files ---


def good_policy(draw, layers) -> dict:
    return {name: [draw(st.integers(2, 8)), draw(st.integers(2, 8))] for name in layers}


@st.composite
def policy_files(draw, layers) -> bytes:
    policy = good_policy(draw, layers)
    how = draw(st.sampled_from(["valid", "mutated", "mutated", "json", "garbage", "truncated"]))
    if how == "garbage":
        return draw(st.binary(max_size=300))
    if how == "truncated":
        whole = json.dumps({"policy": policy}).encode()
        return whole[:draw(st.integers(0, len(whole) - 1))]
    if how == "json":
        return json.dumps(draw(JSON | JSON.map(lambda value: {"policy": value}))).encode()
    if how == "mutated":
        name = draw(st.sampled_from(layers))
        change = draw(st.sampled_from(["drop", "add", "bits", "bits"]))
        if change == "drop":
            del policy[name]
        elif change == "add":
            policy[draw(TEXT)] = [8, 8]
        else:
            policy[name] = draw(JSON | st.lists(st.integers(-2, 12) | st.floats() | st.booleans(), max_size=3))
    return json.dumps({"policy": policy} if draw(st.booleans()) else policy).encode()


def is_policy(content: bytes, layers) -> bool:
    """The oracle: a JSON map of exactly the model's layers to two integral bit-widths in [2, 8]."""
    try:
        data = json.loads(content)
    except ValueError:
        return False
    data = data.get("policy", data) if isinstance(data, dict) else data
    integral = lambda b: (isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) and b == int(b)
                          and 2 <= b <= 8)
    return isinstance(data, dict) and sorted(data) == sorted(layers) and all(
        isinstance(v, list) and len(v) == 2 and all(map(integral, v)) for v in data.values())


@HOSTILE
@given(data=st.data())
def test_generated_policy_files_are_used_or_refused_in_one_line(data, capsys, no_model_work, digits_facts,
                                                                 tmp_path_factory):
    Tried.one("policy files")
    content = data.draw(policy_files(digits_facts["layers"]))
    path = tmp_path_factory.mktemp("policy") / "policy.json"
    path.write_bytes(content)
    code, err = attempt(capsys, "certify", "--policy", path, *TINY)
    assert (code == "accepted") == is_policy(content, digits_facts["layers"]), (code, err)
    if code != "accepted":
        assert_refused(code, err, path)
    assert path.read_bytes() == content


# --- result files ---


def json_paths(value, prefix=(), depth=3) -> list[tuple]:
    """Every key path into ``value`` down to ``depth`` (first item of lists only)."""
    if depth == 0:
        return []
    items = value.items() if isinstance(value, dict) else [(0, value[0])] if isinstance(value, list) and value else []
    paths = []
    for key, inner in items:
        paths += [prefix + (key,)] + json_paths(inner, prefix + (key,), depth - 1)
    return paths


@st.composite
def damaged_results(draw, record: dict) -> bytes:
    """A result record with one key deleted or replaced by any JSON value; or other JSON, garbage, a truncation."""
    how = draw(st.sampled_from(["mutated", "mutated", "mutated", "mutated", "json", "garbage", "truncated"]))
    whole = json.dumps(record).encode()
    if how == "garbage":
        return draw(st.binary(max_size=300))
    if how == "truncated":
        return whole[:draw(st.integers(0, len(whole) - 1))]
    if how == "json":
        return json.dumps(draw(JSON)).encode()
    paths = json_paths(record)
    *parents, last = draw(st.sampled_from([p for p in paths if len(p) <= 2]) | st.sampled_from(paths))
    copy = json.loads(whole)
    holder = copy
    for key in parents:
        holder = holder[key]
    if draw(st.booleans()):
        del holder[last]
    else:
        holder[last] = draw(JSON)
    return json.dumps(copy).encode()


RESULT = "digits/sigma0.25/budget0.05/uniform-seed0.json"
CONSUMERS = ["run reuses it", "leaderboard ranks it", "certify replays it"]


@HOSTILE
@given(data=st.data(), consumer=st.sampled_from(CONSUMERS), which=st.sampled_from([RESULT, "digits/sigma0.25/fp32-seed0.json"]))
def test_generated_result_files_are_used_or_refused_in_one_line(data, consumer, which, capsys, populated,
                                                                 no_model_work, tmp_path_factory):
    Tried.one("result files")
    root = tmp_path_factory.mktemp("results")
    out = root / "results"
    shutil.copytree(populated / "results", out)
    victim = out / which
    victim.write_bytes(data.draw(damaged_results(json.loads(victim.read_text()))))
    before = snapshot(out)
    event(consumer)
    if consumer == "run reuses it":
        code, err = attempt(capsys, *RUN_FRESH, "--out", out)
    elif consumer == "leaderboard ranks it":
        code, err = attempt(capsys, "leaderboard", "--results", out, "--out", root / "boards", "--format",
                            data.draw(st.sampled_from(["json", "csv", "markdown", "latex"])))
    else:
        code, err = attempt(capsys, "certify", "--policy", victim, *TINY)
    if code not in ("accepted", 0):
        line = assert_refused(code, err)
        assert consumer == "certify replays it" or str(victim) in line  # certify may refuse a replayed setting
    assert snapshot(out) == before


# --- checkpoints ---


@pytest.fixture(scope="module")
def digits_weights(populated):
    from arqbench import plugins
    from arqbench.models.base_model import trained_path

    cached = trained_path(plugins.create("benchmark", "digits"), 0.25)
    return cached, torch.load(cached, weights_only=True)["state_dict"]


LAYOUTS = {"arqbench": lambda s: {"state_dict": s, "arqbench": "0.1", "normalization": {"mean": [0.3], "std": [0.4]}},
           "bare": lambda s: s, "timm": lambda s: {"model": s}, "data parallel": lambda s: {f"module.{k}": v for k, v in
                                                                                           s.items()},
           "cohen": lambda s: {"arch": "r", "state_dict": {f"1.{k}": v for k, v in s.items()}}}
TENSORS = st.lists(st.integers(0, 3), max_size=3).map(lambda shape: torch.zeros(shape))
NUMBERS = st.lists(st.floats() | st.integers(-2, 2) | st.booleans() | TEXT, min_size=0, max_size=2)


def recorded_normalization_fits(record) -> bool:
    """The oracle for arqbench's record: absent (then the model's own), or one finite mean and one positive std."""
    if not (isinstance(record, dict) and {"mean", "std"} <= set(record)):
        return True
    real = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    mean, std = record["mean"], record["std"]
    return (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 1 and real(mean[0])
            and real(std[0]) and std[0] > 0)


@st.composite
def checkpoint_objects(draw, state: dict) -> tuple[object, str, bool]:
    """(what to torch.save, its layout, whether it must load): the real weights in a known layout, possibly mutated."""
    state = dict(state)
    key = draw(st.sampled_from(sorted(state)))
    change = draw(st.sampled_from(["none", "none", "none", "dtype", "dtype", "drop", "add", "rename", "shape",
                                   "not a tensor", "objects", "normalization"]))
    fits = change in ("none", "dtype", "normalization")
    if change == "drop":
        del state[key]
    elif change == "add":
        state[draw(TEXT)] = draw(TENSORS)
    elif change == "rename":
        state[draw(TEXT.filter(lambda k: k not in state))] = state.pop(key)
    elif change == "shape":
        shape = draw(st.lists(st.integers(0, 4), max_size=4).filter(lambda s: tuple(s) != tuple(state[key].shape)))
        state[key] = torch.zeros(shape, dtype=state[key].dtype)
    elif change == "dtype":
        state[key] = state[key].to(draw(st.sampled_from([torch.float64, torch.float16, torch.int32])))
    elif change == "not a tensor":
        state[key] = draw(JSON)
    elif change == "objects":
        return draw(st.one_of(JSON, st.dictionaries(TEXT, TENSORS | JSON, max_size=3), TENSORS)), "none", False
    layout = "arqbench" if change == "normalization" else draw(st.sampled_from(sorted(LAYOUTS)))
    obj = LAYOUTS[layout](state)
    if change == "normalization":
        obj["normalization"] = draw(JSON | st.fixed_dictionaries({"mean": NUMBERS, "std": NUMBERS}))
        fits = recorded_normalization_fits(obj["normalization"])
    return obj, layout, fits


@HOSTILE
@given(data=st.data(), legacy=st.booleans())
def test_generated_checkpoints_load_or_are_refused_in_one_line(data, legacy, capsys, no_model_work, digits_weights,
                                                               tmp_path_factory):
    Tried.one("checkpoints")
    cached, state = digits_weights
    path = tmp_path_factory.mktemp("checkpoint") / "model.pt"
    how = data.draw(st.sampled_from(["saved", "saved", "saved", "saved", "garbage", "truncated", "code"]))
    fits = False
    layout = "arqbench"
    if how == "saved":
        obj, layout, fits = data.draw(checkpoint_objects(state))
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    elif how == "code":
        torch.save({"state_dict": state, "hook": RunsCode()}, path, _use_new_zipfile_serialization=not legacy)
    else:
        good = cached.read_bytes()
        path.write_bytes(data.draw(st.binary(max_size=300)) if how == "garbage"
                         else good[:data.draw(st.integers(0, len(good) - 1))])
    out = path.parent / "results"
    event(f"checkpoint: {how}, {'fits' if fits else 'does not fit'}")
    given = [] if layout == "arqbench" else ["--normalization", "digits"]  # a plain state_dict does not record it
    code, err = attempt(capsys, *RUN_FRESH, "--checkpoint", path, "--out", out, *given)
    assert (code == "accepted") == fits, (code, err)
    if not fits:
        line = assert_refused(code, err, path)
        assert how != "code" or "could run code" in line
    assert not out.exists()


# --- CIFAR-10 batches ---


def cifar_batch(n: int, rng) -> dict:
    return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [int(v) for v in rng.integers(0, 10, n)]}


@st.composite
def cifar_contents(draw) -> tuple[bytes, bool]:
    """(file content, whether it is a CIFAR-10 batch the reader must take)."""
    good = cifar_batch(3, np.random.default_rng(draw(st.integers(0, 9))))
    n = draw(st.integers(0, 3))
    dtype = draw(st.sampled_from([np.uint8, np.uint8, np.int64, np.float32]))
    width = draw(st.sampled_from([3072, 3072, 1024, 3073]))
    labels = draw(st.one_of(st.lists(st.integers(0, 9), min_size=n, max_size=n), st.lists(st.integers(-2, 12),
                                                                                          max_size=4), JSON))
    keys = draw(st.sampled_from([(b"data", b"labels"), ("data", "labels"), (b"data", b"label"), (b"images", b"labels")]))
    entry = {keys[0]: np.zeros((n, width), dtype=dtype), keys[1]: labels}
    valid = (keys in [(b"data", b"labels"), ("data", "labels")] and dtype == np.uint8 and width == 3072 and n >= 1
             and isinstance(labels, list) and len(labels) == n and all(type(v) is int and 0 <= v <= 9 for v in labels))
    how = draw(st.sampled_from(["valid", "valid", "structure", "structure", "garbage", "truncated", "code",
                                "not a dict"]))
    if how == "valid":
        batch = cifar_batch(draw(st.integers(1, 3)), np.random.default_rng(draw(st.integers(0, 9))))
        if draw(st.booleans()):
            batch = {key.decode(): value for key, value in batch.items()}
        return pickle.dumps(batch, protocol=draw(st.integers(2, 5))), True
    if how == "structure":
        return pickle.dumps(entry, protocol=draw(st.integers(2, 5))), valid
    if how == "code":
        return pickle.dumps({b"data": good[b"data"], b"labels": RunsCode()}), False
    if how == "not a dict":
        return pickle.dumps(draw(JSON)), False
    if how == "truncated":
        whole = pickle.dumps(good, protocol=2)
        return whole[:draw(st.integers(0, len(whole) - 1))], False
    return draw(st.binary(max_size=200)), False


@HOSTILE
@given(data=st.data(), victim=st.sampled_from(["data_batch_1", "data_batch_5", "test_batch"]))
def test_generated_cifar_batches_are_read_or_refused_in_one_line(data, victim, capsys, no_model_work, tmp_path_factory):
    Tried.one("CIFAR batches")
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(cifar_batch(3, rng), protocol=2))
    content, valid = data.draw(cifar_contents())
    (folder / victim).write_bytes(content)
    event("a valid batch" if valid else "an invalid batch")
    out = root / "results"
    code, err = attempt(capsys, "run", "--benchmarks", "resnet20-cifar10", "--data-root", root, "--methods", "uniform",
                        "--test-images", "1", "--n0", "4", "--n", "8", "--finetune-epochs", "0", "--out", out)
    # valid data still has no base model here: refused too, for that reason
    line = assert_refused(code, err)
    assert ("no base model" in line) == valid and (valid or str(folder / victim) in line), line
    assert not out.exists()


# --- ImageNet folders ---

WNIDS = ["n01440764", "n01443537", "n15075141"]  # first, second and last of the 1000
READABLE = ("png", "jpeg")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
NAME = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=9)


def image_file(kind: str) -> bytes:
    if kind == "empty":
        return b""
    if kind == "garbage":
        return random.Random(1).randbytes(64)
    buffer = io.BytesIO()
    Image.fromarray(np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)).save(buffer, "PNG" if kind == "png" else "JPEG")
    whole = buffer.getvalue()
    return whole if kind in READABLE else whole[:len(whole) // 2]


FILES = st.dictionaries(st.tuples(NAME, st.sampled_from([".JPEG", ".png", ".jpg", ".JPEG", ".txt", ""])).map("".join),
                        st.sampled_from(["png", "jpeg", "png", "jpeg", "garbage", "truncated", "empty"]), max_size=3)


@HOSTILE
@given(tree=st.dictionaries(st.sampled_from(WNIDS) | st.sampled_from(WNIDS) | NAME, FILES, max_size=3))
def test_generated_imagenet_folders_are_read_or_refused_in_one_line(tree, tmp_path_factory):
    from arqbench import plugins
    from arqbench.errors import ArqbenchError, SkipBenchmark

    Tried.one("ImageNet folders")
    root = tmp_path_factory.mktemp("imagenet")
    for folder, files in tree.items():
        (root / "val" / folder).mkdir(parents=True)
        for name, kind in files.items():
            (root / "val" / folder / name).write_bytes(image_file(kind))
    (root / "val").mkdir(exist_ok=True)
    images = lambda files: [n for n in files if n.lower().endswith(IMAGE_EXTENSIONS)]
    usable = tree and all(f in WNIDS and images(files) for f, files in tree.items())
    try:
        test = plugins.create("benchmark", "resnet50-imagenet").splits(root).test
    except SkipBenchmark as exc:
        assert not usable and "\n" not in str(exc) and str(root / "val") in str(exc), str(exc)
        event("refused")
        return
    assert usable
    assert sorted(path for path, _ in test.samples) == sorted(str(root / "val" / f / n) for f, files in tree.items()
                                                              for n in images(files))
    for i, (path, label) in enumerate(test.samples):
        kind = tree[path.split("/")[-2]][path.split("/")[-1]]
        try:
            x, y = test[i]
        except ArqbenchError as exc:
            assert kind not in READABLE and "\n" not in str(exc) and path in str(exc), str(exc)
            event("an unreadable image refused")
            continue
        assert kind in READABLE and x.shape == (3, 224, 224) and y == {"n01440764": 0, "n01443537": 1,
                                                                      "n15075141": 999}[path.split("/")[-2]]
