"""Nothing computed is lost: a sweep killed with SIGKILL and re-run ends with the results of an uninterrupted
run; two runs on one --out share the work; corrupt caches are reported and rebuilt; a failing cell is
recorded with its reason while the sweep goes on."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import TINY, run_subprocess

from arqbench import files, plugins
from arqbench.errors import Busy
from arqbench.hookspecs import hookimpl
from arqbench.quantization.policy import uniform_policy
from arqbench.search.context import SearchResult

SWEEP = ["run", "--methods", "uniform,random,haq", "--episodes", "3", "--budget", "0.05,0.1", *TINY]
CELLS = 7  # fp32 + 3 methods x 2 budgets


def results(out) -> dict:
    return {str(p.relative_to(out)): json.loads(p.read_text()) for p in sorted(out.rglob("*.json"))}


def numbers(record: dict) -> dict:
    """What must not depend on interruptions: everything but timings, paths and creation times."""
    certificates = [{k: v for k, v in c.items() if k != "seconds"} for c in record["certificates"]]
    return {"policy": record["policy"], "metrics": record["metrics"], "cost": record["cost"],
            "config": record["config"], "certificates": certificates,
            "base_model": record["base_model"]["fingerprint"]}


def assert_clean(*roots) -> None:
    """No temp file left behind, and every JSON file parses."""
    for root in roots:
        assert not list(root.rglob(".*.tmp")), list(root.rglob(".*.tmp"))
        for path in root.rglob("*.json"):
            json.loads(path.read_text())


def counts(stderr: str) -> tuple[int, int]:
    """(cells run, cells reused) from a run's summary line."""
    match = re.search(r"(\d+) cells run, (\d+) reused, 0 failed", stderr)
    assert match, stderr
    return int(match[1]), int(match[2])


def flat(text: str) -> str:
    """Console output with rich's line wrapping undone (at spaces)."""
    return " ".join(text.split())


def contains(text: str, needle: str) -> bool:
    """``needle`` is in console output, wherever rich wrapped it (long paths wrap mid-word)."""
    return "".join(needle.split()) in "".join(text.split())


def start(out, home, log):
    env = dict(os.environ, ARQBENCH_HOME=str(home), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "arqbench.cli", *SWEEP, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=log, text=True)


@pytest.fixture(scope="module")
def reference_home(tmp_path_factory):
    """A cache home whose base model is trained, uninterrupted, by the reference run below (1 thread, as
    every run in this module: a model's float sums, so its weights, depend on the thread count)."""
    return tmp_path_factory.mktemp("reference-home")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, reference_home):
    """The same sweep, uninterrupted."""
    out = tmp_path_factory.mktemp("uninterrupted")
    result = run_subprocess(*SWEEP, "--out", out, env={"ARQBENCH_HOME": str(reference_home), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert counts(result.stderr) == (CELLS, 0)
    return {path: numbers(record) for path, record in results(out).items()}


def test_a_sweep_killed_at_every_stage_resumes_to_the_uninterrupted_results(tmp_path, reference):
    """SIGKILL while the base model trains (a fresh cache home), then after 1, 2, 4 and 6 of 7 result
    files exist (so mid-cell: searching, fine-tuning, certifying or writing), re-running each time."""
    out, home = tmp_path / "out", tmp_path / "home"
    training = lambda: any((home / "models").rglob("*.state"))  # noqa: E731
    written = lambda k: lambda: len(list(out.rglob("*.json"))) >= k  # noqa: E731
    kill_points = [("while training the base model", training)] + [
        (f"after {k} result files", written(k)) for k in (1, 2, 4, 6)]
    with open(tmp_path / "log", "w") as log:
        for what, reached in kill_points:
            proc = start(out, home, log)
            deadline = time.monotonic() + 120
            while not reached():
                assert proc.poll() is None, f"the run ended before the kill point '{what}'"
                assert time.monotonic() < deadline, f"kill point '{what}' never reached"
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert_clean(out, home)
    final = run_subprocess(*SWEEP, "--out", out, env={"ARQBENCH_HOME": str(home), "OMP_NUM_THREADS": "1"})
    assert final.returncode == 0, final.stderr
    run, reused = counts(final.stderr)
    assert reused >= 6 and run + reused == CELLS
    assert_clean(out, home)
    resumed = {path: numbers(record) for path, record in results(out).items()}
    assert set(resumed) == set(reference)
    for path in reference:  # the base model too: training resumed from its last epoch gives the same weights
        assert resumed[path] == reference[path], path


def test_two_runs_on_one_out_share_the_cells_without_corrupting_each_other(tmp_path, reference, reference_home):
    out = tmp_path / "out"
    logs = [open(tmp_path / f"log{i}", "w+") for i in range(2)]
    procs = [start(out, reference_home, log) for log in logs]
    for proc in procs:
        assert proc.wait(timeout=300) == 0
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read())
        log.close()
    ran = [counts(text)[0] for text in outputs]
    assert sum(ran) == CELLS, outputs  # each cell computed once, by one of the two
    assert_clean(out)
    assert {path: numbers(record) for path, record in results(out).items()} == reference


def test_a_killed_writer_leaves_no_partial_file_and_its_temp_file_is_cleaned_up(tmp_path):
    target = tmp_path / "result.json"
    files.write_json_atomic(target, {"old": True})

    class Boom(Exception):
        pass

    def explode(handle):
        handle.write(b'{"half": ')
        raise Boom

    with pytest.raises(Boom):
        files._atomic(target, explode)
    assert json.loads(target.read_text()) == {"old": True}
    assert not list(tmp_path.glob(".*.tmp"))

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".result.json.{files.HOST}.{dead.pid}.abcd1234.tmp"
    live = tmp_path / f".result.json.{files.HOST}.{os.getpid()}.abcd1234.tmp"
    stale.write_text('{"half": ')
    live.write_text('{"half": ')
    assert files.remove_stale_temps(tmp_path) == 1
    assert not stale.exists() and live.exists()  # a live writer's temp file is left alone
    stale.write_text('{"half": ')
    files.write_json_atomic(target, {"new": True})  # the next write of a file sweeps its dead temp files
    assert not stale.exists() and json.loads(target.read_text()) == {"new": True}


def test_a_corrupt_cache_entry_is_reported_removed_and_rebuilt(tmp_path, capsys):
    entry = files.cache_path("hessian", {"any": "key"})
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_bytes(b"PK\x03\x04 truncated")
    assert files.torch_load_cached(entry) is None
    assert contains(capsys.readouterr().err, f"cache entry {entry} is corrupt") and not entry.exists()
    files.torch_save_atomic(entry, {"trace": torch.tensor(1.0)})
    assert files.torch_load_cached(entry)["trace"] == 1.0


def test_a_corrupt_cached_base_model_is_reported_and_retrained_to_the_same_weights(tmp_path, monkeypatch, capsys):
    from dataclasses import replace

    from arqbench.models.base_model import trained_path
    from arqbench.pipeline.config import resolve
    from arqbench.pipeline.prepare import prepare

    monkeypatch.setenv("ARQBENCH_HOME", str(tmp_path))
    digits = plugins.create("benchmark", "digits")
    digits = replace(digits, recipe=replace(digits.recipe, epochs=2))  # a quick recipe, its own cache entry
    protocol = resolve(digits, {"test_images": 8})
    expected = prepare(digits, 0.25, protocol, torch.device("cpu")).fingerprint  # trained on first use
    cached = trained_path(digits, 0.25)
    size = cached.stat().st_size
    cached.write_bytes(cached.read_bytes()[:1000])  # truncated mid-file
    capsys.readouterr()
    assert prepare(digits, 0.25, protocol, torch.device("cpu")).fingerprint == expected
    assert contains(capsys.readouterr().err, f"cached base model {cached} is unusable")
    assert cached.stat().st_size == size


def test_a_corrupt_float_certification_cache_entry_is_rebuilt_with_the_same_results(cli, tmp_path, monkeypatch):
    from arqbench.models.base_model import base_model

    digits = plugins.create("benchmark", "digits")
    base_model(digits, 0.25, digits.splits(None), torch.device("cpu"))  # trained once per test session
    home = tmp_path / "home"
    shutil.copytree(files.home() / "models", home / "models")  # a cache home of its own, with that model
    monkeypatch.setenv("ARQBENCH_HOME", str(home))
    args = ["run", "--methods", "uniform", "--budget", "0.05", "--certifier", "irs", *TINY, "--out", tmp_path / "out"]
    assert cli(*args)[0] == 0
    before = {path: numbers(r) for path, r in results(tmp_path / "out").items()}
    entries = sorted((home / "irs").rglob("*.pt"))
    assert entries
    entries[0].write_bytes(entries[0].read_bytes()[:50])
    code, _, err = cli(*args, "--force")
    assert code == 0 and contains(err, f"cache entry {entries[0]} is corrupt")
    assert {path: numbers(r) for path, r in results(tmp_path / "out").items()} == before


class Failing:
    """Search methods that fail in the ways a real one can: an exception, a NaN loss, out of memory."""

    class Raises:
        def search(self, ctx):
            raise ValueError("this plugin has a bug")

    class Diverges:
        def search(self, ctx):
            model = ctx.quantize(ctx.within_budget({layer.name: (8, 8) for layer in ctx.layers}))
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
            ctx.finetune(model, 1)
            return SearchResult({})

    class OutOfMemory:
        def search(self, ctx):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    @hookimpl
    def register_search(self, register):
        register("raises", self.Raises)
        register("diverges", self.Diverges)
        register("oom", self.OutOfMemory)


def test_failing_cells_are_recorded_with_their_reason_and_the_sweep_goes_on(cli, tmp_path):
    plugins.register_plugin(Failing(), "failing")
    try:
        code, _, err = cli("run", "--methods", "raises,uniform,diverges,oom", "--budget", "0.05", *TINY,
                           "--out", tmp_path)
    finally:
        plugins.unregister_plugin("failing")
    assert code == 1
    record = {r["method"]: r for r in results(tmp_path).values()}
    assert record["uniform"]["status"] == record["fp32"]["status"] == "ok"
    assert record["raises"]["error"] == "ValueError: this plugin has a bug"
    assert "loss became nan" in record["diverges"]["error"]
    assert record["oom"]["error"] == "OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB"
    err = flat(err)
    assert "2 cells run, 0 reused, 3 failed" in err
    summary = err[err.index("2 cells run"):]
    for method in ("raises", "diverges", "oom"):
        assert f"failed digits sigma=0.25 budget=0.05 {method} seed=0: {record[method]['error']}" in summary
    # a re-run retries only the failed cells
    code, _, err = cli("run", "--methods", "uniform", "--budget", "0.05", *TINY, "--out", tmp_path)
    assert code == 0 and "0 cells run, 2 reused" in err


class BusyOnce:
    """A search whose shared work another process is computing, until it is allowed to wait for it."""

    class Search:
        def search(self, ctx):
            if not ctx.wait_for_shared:
                raise Busy("profile: another process is measuring this profile")
            return SearchResult(uniform_policy(ctx.layers, 8, 8))

    @hookimpl
    def register_search(self, register):
        register("busy-once", self.Search)


def test_a_cell_whose_shared_work_is_busy_runs_after_the_other_cells(cli, tmp_path):
    plugins.register_plugin(BusyOnce(), "busy-once")
    try:
        code, _, err = cli("run", "--methods", "busy-once,uniform", "--budget", "1.0", *TINY, "--out", tmp_path)
    finally:
        plugins.unregister_plugin("busy-once")
    assert code == 0, err
    record = {r["method"]: r for r in results(tmp_path).values()}
    assert record["busy-once"]["status"] == record["uniform"]["status"] == "ok"
    err = flat(err)
    deferred = err.index("busy-once seed=0: profile: another process is measuring this profile; running it after "
                         "the other cells")
    assert deferred < err.index("uniform seed=0") < err.rindex("busy-once seed=0")
    assert "3 cells run, 0 reused, 0 failed" in err
