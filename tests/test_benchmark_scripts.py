"""Every script in benchmarks/ runs in its --quick mode, as a researcher would run it: a subprocess of this
Python with its own ARQBENCH_HOME and one CPU thread. Each must exit 0 and print its closing lines."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import TINY, run_subprocess

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One private cache home for this module: the digits base model is trained once for every script."""
    return tmp_path_factory.mktemp("scripts-home")


def script(home: Path, name: str, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, ARQBENCH_HOME=str(home), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(SCRIPTS / name), *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=home, timeout=300)
    assert done.returncode == 0, f"{name} exited {done.returncode}: {done.stderr[-3000:]}"
    return done


def test_every_script_in_benchmarks_is_tested_here():
    tested = {"perf.py", "discrimination.py", "finetune_recipes.py", "reward_fidelity.py", "gpu_throughput.py",
              "threads.py", "episodes.py", "rescoring.py", "profile_fidelity.py", "ablation.py", "spread.py",
              "base_models.py", "reward_sizing.py"}
    assert {p.name for p in SCRIPTS.glob("*.py")} == tested


def test_perf_quick(home):
    out = script(home, "perf.py", "--quick").stdout
    assert "certification / raw forward" in out and "arq / haq search time" in out
    assert "irs equal-acr speedup (digits): " in out
    assert out.rstrip().splitlines()[-1].startswith("arq/haq search time at equal fine-tune (digits): ")


def test_base_models_quick(home, tmp_path):
    """Two seeds, two networks: every pair is judged pooled and on each base model, and written out."""
    out = script(home, "base_models.py", tmp_path / "results", "--quick", "--out", tmp_path).stdout
    table = pd.read_csv(tmp_path / "base-models.csv")
    assert list(table[["a", "b"]].itertuples(index=False, name=None)) in ([("uniform", "random")],
                                                                          [("random", "uniform")])
    assert table["base_models"].tolist() == [2] and len(table["per_base_model"].iloc[0]) == 2
    assert "| A - B | pooled [95% CI] | per base model | holds |" in (tmp_path / "base-models.md").read_text()
    assert out.rstrip().splitlines()[-1].startswith("holds ")


def test_spread_quick(home):
    """The published MobileNetV2 cells: arq's shipped ACR at 1.1% moves by 0.105 over its seeds, hawq's by 0.014."""
    out = script(home, "spread.py", "--quick").stdout
    line = next(l for l in out.splitlines() if " 0.011 " in l and " arq " in l)
    assert line.split()[4:6] == ["3", "1"] and " 0.105 " in line  # 3 seeds, 1 base model, the range
    assert out.rstrip().splitlines()[-1].startswith("spread arq=")


def test_discrimination_quick(home):
    out = script(home, "discrimination.py", "--quick").stdout
    assert "random-1" in out and "random-2" not in out  # two policies
    assert "random ACR over 2 policies" in out
    assert "random policies whose paired interval is above uniform:" in out


def test_reward_fidelity_quick(home):
    out = script(home, "reward_fidelity.py", "--quick").stdout
    assert "[3/3]" in out and "[4/" not in out  # three policies
    assert "final ACR over 3 policies" in out
    assert out.rstrip().splitlines()[-1].startswith("spearman arq=")


def test_reward_fidelity_ranks_a_folders_shipped_policies_and_the_searches_top(home, tmp_path):
    results = tmp_path / "results"
    env = {"ARQBENCH_HOME": str(home), "OMP_NUM_THREADS": "1"}
    done = run_subprocess("run", "--methods", "uniform,haq", "--budget", "0.05", "--episodes", "4",
                          "--option", "haq.warmup=1", "--option", "haq.finetune_steps=1", "--out", results, *TINY,
                          env=env)
    assert done.returncode == 0, done.stderr
    out = script(home, "reward_fidelity.py", "--quick", "--results", results / "digits/sigma0.25/budget0.05",
                 "--top", "2", "--policies", "1", "--out", tmp_path / "fidelity").stdout
    assert "uniform: cost" in out and "haq #2 (episode" in out and "random 1: cost" in out
    table = pd.read_csv(tmp_path / "fidelity/digits-sigma0.25-budget0.05-seed0.csv")
    assert list(table["kind"]) == ["shipped", "shipped", "top-haq", "top-haq", "random"]
    summary = (tmp_path / "fidelity/digits-sigma0.25-budget0.05-seed0.md").read_text()
    assert "| objective | Spearman, all |" in summary and "python benchmarks/reward_fidelity.py" in summary


def test_reward_sizing_quick(home, tmp_path):
    """Every setting of the grid is scored on the same policies; repeats average fresh noise, so they differ."""
    out = script(home, "reward_sizing.py", "--quick", "--policies", "5", "--out", tmp_path).stdout
    table = pd.read_csv(tmp_path / "digits-sigma0.25-budget0.025-seed0-sizing.csv")
    assert len(table) == 5 and table["final_acr"].notna().all()
    assert {"arq default", "arq repeats=3", "arq all", "haq default", "haq finetune_steps=final"} <= set(table)
    assert not (table["arq default"] == table["arq repeats=3"]).all()  # another noise stream was averaged in
    summary = (tmp_path / "digits-sigma0.25-budget0.025-seed0-sizing.md").read_text()
    assert "| arq n=2000 |" in summary and "python benchmarks/reward_sizing.py" in summary
    assert out.rstrip().splitlines()[-1].startswith("sizing arq:default=")


def test_rescoring_quick(home):
    out = script(home, "rescoring.py", "--quick").stdout
    for method in ("arq", "haq"):
        assert f"{method} seed 0: search " in out and f"{method} k=0 (off): search reward " in out
        assert f"{method} k=2: search reward " in out and "vs off " in out
    assert out.rstrip().splitlines()[-1].startswith("rescoring arq k=2 ")


def test_finetune_recipes_quick_on_a_tiny_run(home, tmp_path):
    results = tmp_path / "results"
    env = {"ARQBENCH_HOME": str(home), "OMP_NUM_THREADS": "1"}
    done = run_subprocess("run", "--methods", "uniform", "--budget", "0.1,0.2", "--out", results, *TINY, env=env)
    assert done.returncode == 0, done.stderr
    out = script(home, "finetune_recipes.py", results, "--quick").stdout
    assert "clean test accuracy % after the protocol's fine-tune, per recipe" in out
    assert "uniform" in out and "10%" in out and "20%" not in out  # --quick: the first cell only
    assert "recalibrate+freeze-0.5" in out and "per recipe: collapsed models" in out
    assert out.rstrip().splitlines()[-1].startswith("fewest collapsed models: ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_gpu_throughput_without_a_gpu_says_so_in_one_line(home):
    done = script(home, "gpu_throughput.py", "--quick")
    assert done.stdout.strip().splitlines() == [
        "gpu_throughput: no CUDA device here; this script measures GPU throughput, nothing was measured"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_throughput_quick(home):
    out = script(home, "gpu_throughput.py", "--quick").stdout
    assert "digits: certification" in out and "the best forward" in out


def test_threads_quick(home):
    out = script(home, "threads.py", "--quick").stdout
    lines = out.rstrip().splitlines()
    for name, line in zip(("digits", "digits-mobilenetv2"), lines[-2:]):
        assert line.startswith(f"threads {name}: 2/1-thread time quiet ") and ", busy " in line


def test_episodes_quick(home, tmp_path):
    """Two episode counts, two noise decays: each (method, episodes, decay) is a folder of ordinary cells, compared
    with uniform, robust-ilp, the fewest episodes and the first decay, with its exploration counted."""
    out = script(home, "episodes.py", "--quick", "--noise-decay", "0.99,0.5", "--out", tmp_path / "episodes").stdout
    lines = out.rstrip().splitlines()
    for method in ("arq", "haq"):
        for episodes in (2, 4):
            for decay in ("0.99", "0.5"):
                assert any(line.startswith(f"{method} {episodes:>4} episodes, decay {decay}: ACR ")
                           and "vs uniform" in line and "vs robust-ilp" in line and "vs decay 0.99 " in line
                           and "last third revisits" in line for line in lines), (method, episodes, decay)
    assert lines[-1].startswith("episodes: 8 (method, episodes) rows over seeds [0]")
    assert (tmp_path / "episodes" / "episodes4-decay0.5").is_dir() and (tmp_path / "episodes" / "episodes4").is_dir()
    frame = __import__("pandas").read_csv(tmp_path / "episodes" / "episodes.csv")
    assert sorted(frame.episodes) == [2] * 4 + [4] * 4 and (tmp_path / "episodes" / "episodes.png").stat().st_size > 0
    first = frame[frame.noise_decay == 0.99]
    assert (first.vs_first_decay == 0).all() and (frame.distinct_candidates >= 1).all()
    assert ((frame.acr_low <= frame.acr) & (frame.acr <= frame.acr_high)).all()


def test_ablation_quick(home, tmp_path):
    import json

    from arqbench.pipeline.results import read

    out = script(home, "ablation.py", "--quick", "--out", tmp_path / "ablation").stdout
    assert out.rstrip().splitlines()[-1].startswith("ablation arq +selection ")
    frame = __import__("pandas").read_csv(tmp_path / "ablation" / "ablation.csv")
    assert list(zip(frame.method, frame.arm)) == [("arq", a) for a in ("before", "+selection", "+episodes", "+fine-tune",
                                                                       "0.3")] + [("haq", a) for a in ("before",
                                                                       "+episodes", "+fine-tune", "0.3")]
    assert (frame[frame.arm == "before"].vs_before == 0).all()

    def search_of(arm, method):  # each arm changes what it names and nothing else
        result = read(next((tmp_path / "ablation" / arm).rglob(f"{method}-seed0.json")))
        return result["search"], result["run_config"]

    (before, config), (selected, _), (longer, _) = (search_of(a, "arq") for a in ("before", "+selection", "+episodes"))
    assert "rescored" not in before and len(selected["rescored"]) >= 1 and "rescored" not in longer
    assert len(longer["history"]) == 2 * len(before["history"])  # 4 episodes stand for 600, 2 for 100
    assert "bn_freeze=none" in json.dumps(config) and "bn_freeze=none" not in json.dumps(search_of("0.3", "arq")[1])

    # another arm to pair with, read from a folder: candidates fine-tuned as the shipped model, against the defaults
    out = script(home, "ablation.py", "--quick", "--against", "0.3", "--arms", "+final-candidate", "--from",
                 f"0.3={tmp_path / 'ablation' / '0.3'}", "--out", tmp_path / "final").stdout
    assert out.rstrip().splitlines()[-1].startswith("ablation arq +final-candidate ")
    frame = __import__("pandas").read_csv(tmp_path / "final" / "ablation.csv")
    assert list(zip(frame.method, frame.arm)) == [(m, a) for m in ("arq", "haq") for a in ("0.3", "+final-candidate")]
    assert set(frame.against.astype(str)) == {"0.3"} and (frame[frame.arm == "0.3"].vs_before == 0).all()
    final = read(next((tmp_path / "final" / "+final-candidate").rglob("haq-seed0.json")))
    assert final["search"]["finetune_steps"] == "final"


def test_profile_fidelity_quick(home, tmp_path):
    out = script(home, "profile_fidelity.py", "--quick", "--out", tmp_path / "pf").stdout
    lines = out.rstrip().splitlines()
    for method in ("certified", "paired"):
        assert any(line.startswith(f"digits sigma 0.25 seed 0: {method} profile ") and "noisy forwards" in line
                   for line in lines), method
    assert any("cost certified/paired: time " in line and "hawq search " in line and "spearman " in line
               for line in lines)
    for budget in ("1.50%", "2.50%", "5.00%"):
        assert any(line.startswith(f"digits sigma 0.25 seed 0 budget {budget}: paired - certified ACR ")
                   for line in lines), budget
    assert lines[-1].startswith("wrote summary.csv, profiles.csv and policies.csv")
    pd = __import__("pandas")
    summary = pd.read_csv(tmp_path / "pf" / "summary.csv")
    assert len(summary) == 1 and summary.paired_forwards[0] < summary.certified_forwards[0]
    profiles = pd.read_csv(tmp_path / "pf" / "profiles.csv")
    assert sorted(set(profiles.method)) == ["certified", "paired"] and len(profiles) == 2 * 5 * 13
    policies = pd.read_csv(tmp_path / "pf" / "policies.csv")
    assert len(policies) == 2 * 3 and not list((tmp_path / "pf").glob("cold-cache-*"))  # cold caches removed
