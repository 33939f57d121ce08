"""A cell's search cost: its own work, plus each cached item it reused counted once; lock waits apart.
Old result files (one total, reuse summed per read) are read into the same parts."""

import json
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import PUBLISHED_02
from filelock import FileLock

from arqbench import files, plugins
from arqbench.pipeline.cell import CellRun
from arqbench.pipeline.config import resolve
from arqbench.pipeline.prepare import prepare
from arqbench.pipeline.results import Cell
from arqbench.pipeline.timing import search_timing
from arqbench.search.ledger import Ledger

CPU = torch.device("cpu")
TINY_ARQ = {"episodes": 50, "warmup": 50, "images": 4, "n": 100, "finetune_steps": 0,  # 50 random candidates
            "rescore_top": 0}  # the search's own cache alone (the re-score's is the same mechanism)


def cell_run(checkpoint, method, budget, seed, options):
    benchmark = plugins.create("benchmark", "digits")
    protocol = resolve(benchmark, {"n0": 20, "n": 200, "batch_size": 400, "finetune_epochs": 0,
                                   "options": {"irs": {"n_p": 0.5}, **options}})
    prepared = prepare(benchmark, 0.25, protocol, CPU, checkpoint=checkpoint)
    return CellRun(Cell("digits", 0.25, budget, method, seed), prepared, protocol, CPU)


def test_an_arq_search_counts_its_cached_float_certification_once(quick_digits_checkpoint):
    run = cell_run(quick_digits_checkpoint, "arq", 0.05, 11, {"arq": TINY_ARQ})
    first = run.train()  # certifies the float model on its search images itself: own work, nothing reused
    assert first.search["certifier_stats"]["float_certified"] == 4
    assert first.timing["search_reused_s"] == 0.0

    ledger = Ledger()
    _, info = run.search(ledger)  # another cell: the float certification comes from the cache
    stats = info["certifier_stats"]
    scored = 1 + sum(not h["revisit"] for h in info["history"])  # the float model, then each new candidate
    assert stats.get("float_certified", 0) == 0 and stats["float_reused"] == 4 * scored and scored > 40
    cached = {key: torch.load(files.home() / f"{key}.pt", weights_only=True)["seconds"] for key in ledger.reused_items}
    assert len(cached) == 4 and all(key.startswith("irs/") for key in cached)  # one item per search image
    assert ledger.reused_s == pytest.approx(sum(cached.values()))  # once, not once per candidate
    assert ledger.wait_s == 0.0

    second = run.train()
    timing = second.timing
    assert timing["search_reused_s"] == pytest.approx(ledger.reused_s)
    assert timing["search_cost_s"] == pytest.approx(timing["search_s"] + timing["search_reused_s"])
    assert search_timing({"method": "arq", "timing": timing, "search": second.search})["search_cost_s"] == \
        timing["search_cost_s"]  # a new file is read as written


def test_a_second_worker_that_waited_for_a_profile_reports_the_wait_apart_and_the_profile_once(
        quick_digits_checkpoint, monkeypatch):
    options = {"robust-ilp": {"images": 2}}
    measuring = cell_run(quick_digits_checkpoint, "robust-ilp", 0.05, 12, options).train()
    assert measuring.search["profile_cache"]["reused"] == 0 and measuring.timing["search_wait_s"] < 1.0
    path = Path(measuring.search["profile_cache"]["path"])
    measured = path.read_bytes()
    path.unlink()
    other = FileLock(path.with_name(f".{path.name}.lock"))  # another worker measuring the same profile
    other.acquire()

    waiting, real = threading.Event(), Ledger.waiting
    monkeypatch.setattr(Ledger, "waiting", lambda self: (waiting.set(), real(self))[1])
    second = cell_run(quick_digits_checkpoint, "robust-ilp", 0.03, 12, options)
    done = {}
    worker = threading.Thread(target=lambda: done.setdefault("trained", second.train()))
    worker.start()
    assert waiting.wait(timeout=300)
    held = time.perf_counter()
    time.sleep(0.5)
    path.write_bytes(measured)  # the other worker finishes
    held = time.perf_counter() - held
    other.release()
    worker.join(timeout=300)

    trained = done["trained"]
    timing, profile = trained.timing, json.loads(measured)
    assert trained.search["profile_cache"] == {"path": str(path), "reused": len(profile["rows"]), "computed": 0,
                                               "skipped": 0, "forwards": 0}
    assert timing["search_wait_s"] >= held  # blocked from before `held` started until after it ended
    assert timing["search_reused_s"] == pytest.approx(  # every point and f's numbers, each once
        sum(row["seconds"] for row in profile["rows"]) + profile["reference"]["seconds"])
    assert timing["search_cost_s"] == pytest.approx(timing["search_s"] + timing["search_reused_s"])


def test_old_published_files_read_as_own_work_plus_each_reused_item_once():
    """The digits headline's arq cell: 3,030 reads of a 30-image float certification were summed into
    reused_s; its cost is its own search plus that certification once."""
    arq = json.loads((PUBLISHED_02 / "digits/sigma0.25/budget0.025/arq-seed0.json").read_text())
    stats, history = arq["search"]["certifier_stats"], arq["search"]["history"]
    passes = 1 + sum(not h["revisit"] for h in history)
    assert stats["float_reused"] == 30 * passes and stats.get("float_certified", 0) == 0
    parts = search_timing(arq)
    once = stats["reused_s"] / passes  # each pass read the same 30 images, at the seconds they were measured
    assert parts["search_s"] == arq["timing"]["search_s"] and parts["search_wait_s"] == 0.0
    assert parts["search_reused_s"] == pytest.approx(once)
    assert parts["search_cost_s"] == pytest.approx(arq["timing"]["search_s"] + once)
    assert arq["timing"]["search_cost_s"] > parts["search_cost_s"] + 29  # what was published: 57.3 s, not 27.9

    # robust-ilp seed 1 on MobileNetV2 measured no point: its search_s was the wait for seed 0's profile
    ilp = json.loads((PUBLISHED_02 / "digits-mobilenetv2/sigma0.25/budget0.011/robust-ilp-seed1.json").read_text())
    info = ilp["search"]
    assert info["profile_cache"]["computed"] == 0
    parts = search_timing(ilp)
    assert parts["search_wait_s"] == pytest.approx(info["profile_s"], abs=1e-6)
    assert parts["search_s"] == pytest.approx(ilp["timing"]["search_s"] - info["profile_s"], abs=1e-6)
    assert parts["search_reused_s"] == info["reused_s"]
    assert parts["search_cost_s"] == pytest.approx(parts["search_s"] + info["reused_s"])

    # a method with nothing to derive (hawq, which counted its cached traces once) keeps its recorded parts
    hawq = json.loads((PUBLISHED_02 / "digits/sigma0.25/budget0.025/hawq-seed0.json").read_text())
    assert search_timing(hawq) == {"search_s": hawq["timing"]["search_s"], "search_wait_s": None,
                                   "search_reused_s": hawq["search"]["reused_s"],
                                   "search_cost_s": hawq["timing"]["search_s"] + hawq["search"]["reused_s"]}


def test_the_leaderboard_shows_the_cost_and_exports_its_parts():
    from arqbench.pipeline.results import read_all
    from arqbench.report.leaderboard import columns, records
    from arqbench.report.tables import boards

    runs = read_all(PUBLISHED_02 / "digits/sigma0.25/budget0.025")
    (board,) = boards(runs)
    assert ("search_cost_s", "Search (s)", 1, 1) in columns(board, board.tables[0].protocol, 0.25)
    (arq,) = [r for r in records(board, PUBLISHED_02) if r["method"] == "arq"]
    parts = [search_timing(r) for r in runs if r["method"] == "arq"]
    for key in ("search_s", "search_reused_s", "search_wait_s", "search_cost_s"):
        assert arq[f"{key}_mean"] == pytest.approx(sum(p[key] for p in parts) / len(parts))
    assert arq["search_cost_s_mean"] < 25  # 21.2 s, where the double-counted cost read 50.1 s
