"""Base models: deterministic training, one per seed (--base-seeds per-seed), published beside a leaderboard and
found again by fingerprint, and whether a table's order holds across them."""

import json
import os

import pytest
import torch
from conftest import TINY

from arqbench import plugins
from arqbench.models.base_model import fingerprint, load_checkpoint
from arqbench.models.published import MANIFEST, entries
from arqbench.report.tables import Row, order_holds

FAST = [*TINY, "--n", "100", "--batch-size", "100", "--test-images", "6"]


def trained_fingerprint(path) -> str:
    digits = plugins.create("benchmark", "digits")
    model = digits.build_model()
    load_checkpoint(digits, model, path)
    return fingerprint(model)


def test_training_twice_gives_one_fingerprint_whatever_the_thread_count(cli, tmp_path, monkeypatch):
    """Base-model training is seeded, deterministic and pinned to the benchmark's thread count, so --threads
    (which the cells' own work follows) does not change the network."""
    paths = []
    for threads in ("1", "2"):
        monkeypatch.setenv("ARQBENCH_HOME", str(tmp_path / f"home{threads}"))
        code, out, err = cli("train", "--sigma", "0.25", "--epochs", "2", "--threads", threads)
        assert code == 0, err
        paths.append(next((tmp_path / f"home{threads}" / "models" / "digits").glob("*.pt")))
    assert trained_fingerprint(paths[0]) == trained_fingerprint(paths[1])
    monkeypatch.setenv("ARQBENCH_HOME", str(tmp_path / "home-seed1"))
    assert cli("train", "--sigma", "0.25", "--epochs", "2", "--seed", "1")[0] == 0
    other = next((tmp_path / "home-seed1" / "models" / "digits").glob("*.pt"))
    assert trained_fingerprint(other) != trained_fingerprint(paths[0])
    recorded = torch.load(other, weights_only=True)["trained"]
    assert recorded["seed"] == 1 and recorded["deterministic"] and recorded["threads"] == 1


def results(folder) -> dict:
    return {p.relative_to(folder).as_posix(): json.loads(p.read_text()) for p in folder.rglob("*-seed*.json")}


def test_per_seed_base_models_give_each_seed_its_own_network(cli, tmp_path):
    code, out, err = cli("run", "--methods", "fp32", "--seed", "0,1,2", "--base-seeds", "per-seed",
                         "--out", tmp_path / "r", *FAST)
    assert code == 0, err
    runs = results(tmp_path / "r")
    assert {r["base_model"]["seed"] for r in runs.values()} == {0, 1, 2}
    assert len({r["base_model"]["fingerprint"] for r in runs.values()}) == 3
    assert all(r["config"]["protocol"]["base_seeds"] == "per-seed" for r in runs.values())
    code, out, err = cli("run", "--methods", "fp32", "--seed", "0,1", "--base-seeds", "shared",
                         "--out", tmp_path / "shared", *FAST)
    assert code == 0, err
    shared = results(tmp_path / "shared")
    assert len({r["base_model"]["fingerprint"] for r in shared.values()}) == 1
    assert {r["base_model"]["seed"] for r in shared.values()} == {0}
    assert shared["digits/sigma0.25/fp32-seed0.json"]["base_model"]["fingerprint"] == \
        runs["digits/sigma0.25/fp32-seed0.json"]["base_model"]["fingerprint"]  # base model 0 is the same network


def test_cached_work_is_keyed_by_its_base_model(cli, tmp_path):
    """HAWQ's traces for seed 1 are computed again when seed 1 quantizes another network, and reused when
    it quantizes the same one."""
    args = ["run", "--methods", "hawq", "--seed", "1", "--option", "hawq.batches=1", *FAST]
    assert cli(*args, "--base-seeds", "per-seed", "--out", tmp_path / "a")[0] == 0
    assert cli(*args, "--base-seeds", "shared", "--out", tmp_path / "b")[0] == 0
    assert cli(*args, "--base-seeds", "per-seed", "--out", tmp_path / "c")[0] == 0
    cached = [results(tmp_path / x)["digits/sigma0.25/budget0.025/hawq-seed1.json"]["search"]["trace_cached"]
              for x in "abc"]
    assert cached == [False, False, True]


def test_a_checkpoint_is_one_network(cli, tmp_path, quick_digits_checkpoint):
    code, out, err = cli("run", "--methods", "uniform", "--seed", "0,1", "--base-seeds", "per-seed",
                         "--checkpoint", quick_digits_checkpoint, "--out", tmp_path, *FAST)
    assert code == 2 or code == 1
    assert err.count("\n") == 1 and "--checkpoint" in err and "is one network" in err


def test_a_published_row_recertifies_from_a_fresh_home_without_training(cli, tmp_path, monkeypatch):
    """`arqbench leaderboard` ships the base models beside the tables; `certify --policy` on a result file
    below them finds its base model by fingerprint and reproduces every number, and `run --base-models` takes
    the published network instead of training one."""
    board = tmp_path / "board"
    assert cli("run", "--methods", "uniform", "--seed", "0,1", "--base-seeds", "per-seed",
               "--out", board / "results", *FAST)[0] == 0
    code, out, err = cli("leaderboard", "--results", board / "results", "--out", board)
    assert code == 0, err
    published = entries(board / "models")
    assert (board / "models" / MANIFEST).is_file() and {e["seed"] for e in published} == {0, 1}
    assert all(e["path"].name == f"digits-sigma0.25-seed{e['seed']}-{e['fingerprint']}.pt" for e in published)

    fresh = tmp_path / "fresh-home"
    monkeypatch.setenv("ARQBENCH_HOME", str(fresh))
    code, out, err = cli("certify", "--policy", board / "results/digits/sigma0.25/budget0.025/uniform-seed1.json")
    assert code == 0, err
    assert "the published" in err and "differs" not in out and " no " not in out.replace("│", " ")
    assert not (fresh / "models").exists()  # nothing was trained

    code, out, err = cli("run", "--methods", "fp32", "--seed", "1", "--base-seeds", "per-seed",
                         "--base-models", board / "models", "--out", tmp_path / "again", *FAST)
    assert code == 0, err
    again = results(tmp_path / "again")["digits/sigma0.25/fp32-seed1.json"]
    assert again["base_model"]["fingerprint"] == next(e["fingerprint"] for e in published if e["seed"] == 1)
    assert not (fresh / "models").exists()


def run(method, seed, base, acr):
    return {"method": method, "seed": seed, "status": "ok", "base": base, "values": {"acr": acr}}


def test_order_holds_counts_the_base_models_that_agree():
    upper = Row("a", [run("a", 0, "m0", 0.5), run("a", 1, "m1", 0.4), run("a", 2, "m2", 0.3)])
    lower = Row("b", [run("b", 0, "m0", 0.45), run("b", 1, "m1", 0.41), run("b", 2, "m2", 0.3)])
    assert order_holds(upper, lower) == (2, 3)  # m1 disagrees; a tie does not
    one = Row("c", [run("c", s, "m0", 0.1) for s in range(3)])
    assert order_holds(upper, one) is None  # one network: nothing to say across networks
