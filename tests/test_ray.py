"""The Ray executor against a real Ray cluster started here on the loopback address (2 CPUs):
cells run as Ray tasks, a sharded certification merges into exactly the file a local run writes,
and a cell failing in a worker is recorded as failed while the sweep goes on."""

import json
import secrets

import pytest
import torch

ray = pytest.importorskip("ray", reason="Ray is not installed here: pip install 'arqbench[ray]'")

from conftest import TINY  # noqa: E402

SWEEP = ["--methods", "uniform,random", "--budget", "0.05", *TINY]


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, monkeypatch_module):
    """A local Ray whose session folder (logs, sockets) is under the test session's basetemp, shut down after;
    its authentication token in the environment, not saved in ~/.ray/auth_token as a new cluster's would be."""
    monkeypatch_module.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch_module.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    monkeypatch_module.setenv("RAY_AUTH_MODE", "")  # so it is restored after: a new cluster sets it to "token"
    monkeypatch_module.delenv("RAY_AUTH_MODE")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, _temp_dir=str(tmp_path_factory.mktemp("ray")))
    yield
    ray.shutdown()


def results(out) -> dict:
    """Every result file under ``out``, keyed by its path inside ``out``."""
    return {str(p.relative_to(out)): json.loads(p.read_text()) for p in sorted(out.rglob("*.json"))}


def same_numbers(a: dict, b: dict) -> None:
    """Two records of one cell agree on everything but timings and creation time."""
    for key in ("status", "policy", "metrics", "cost", "config", "base_model", "search"):
        assert a[key] == b[key], key
    untimed = [[{k: v for k, v in c.items() if k != "seconds"} for c in r["certificates"]] for r in (a, b)]
    assert untimed[0] == untimed[1]


def test_a_sharded_certification_on_ray_equals_the_local_unsharded_run(cli, tmp_path, cluster):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a Ray task with 1 CPU: fine-tuning's float sums depend on the thread count
    try:
        code, _, err = cli("run", *SWEEP, "--out", tmp_path / "local")
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    code, _, err = cli("run", *SWEEP, "--out", tmp_path / "sharded", "--executor", "ray", "--certify-shards", "3")
    assert code == 0, err
    assert "3 cells run, 0 reused, 0 failed" in err and "ray executor" in err
    code, _, err = cli("run", *SWEEP, "--out", tmp_path / "ray", "--executor", "ray")
    assert code == 0, err

    local, sharded, whole = results(tmp_path / "local"), results(tmp_path / "sharded"), results(tmp_path / "ray")
    assert set(local) == set(sharded) == set(whole) == {
        "digits/sigma0.25/fp32-seed0.json", "digits/sigma0.25/budget0.05/uniform-seed0.json",
        "digits/sigma0.25/budget0.05/random-seed0.json"}
    for path in local:
        same_numbers(local[path], sharded[path])
        same_numbers(local[path], whole[path])
        assert len(sharded[path]["certificates"]) == 8  # the whole certification subset, in subset order
        assert [c["index"] for c in sharded[path]["certificates"]] == [c["index"] for c in local[path]["certificates"]]

    # the local executor reuses what Ray computed: same files, same settings
    code, _, err = cli("run", *SWEEP, "--out", tmp_path / "sharded")
    assert code == 0 and "0 cells run, 3 reused" in err


def test_a_cell_failing_in_a_ray_worker_is_recorded_and_the_sweep_goes_on(cli, tmp_path, cluster):
    out = tmp_path / "out"
    code, _, err = cli("run", "--methods", "hawq,uniform", "--budget", "0.05", *TINY, "--out", out,
                       "--option", "hawq.tie=[['net.nope']]", "--option", "hawq.batches=1",
                       "--option", "hawq.max_iter=2", "--executor", "ray", "--certify-shards", "2")
    assert code == 1
    records = results(out)
    failed = records["digits/sigma0.25/budget0.05/hawq-seed0.json"]
    assert failed["status"] == "failed" and "net.nope" in failed["error"]
    assert "\n" not in failed["error"] and "RayTaskError" not in failed["error"]
    assert "hawq.py" in failed["traceback"]  # the worker's traceback, kept on the way back to the driver
    assert records["digits/sigma0.25/budget0.05/uniform-seed0.json"]["status"] == "ok"
    assert records["digits/sigma0.25/fp32-seed0.json"]["status"] == "ok"
    assert "1 failed" in err and "failed digits sigma=0.25 budget=0.05 hawq seed=0: " in err
