"""`arqbench run --config sweep.toml` and `arqbench run --dry-run`: a TOML file stands for flags, the command
line overrides it, results record the resolved settings; a dry run lists the cells, which are finished,
and what each stage costs by formula, and writes nothing."""

import json
import os
import re

import pytest
from conftest import TINY, run_subprocess

from arqbench.pipeline import dryrun
from arqbench.pipeline.sweep import SweepSpec

SWEEP = """\
methods = ["uniform", "random"]
budget = [0.05]
n0 = 20
n = 200
test-images = 8
batch_size = 200
finetune-epochs = 1
out = "{out}"

[options.random]
"""


def test_a_sweep_file_sets_every_flag_and_the_command_line_overrides_it(cli, tmp_path):
    config = tmp_path / "sweep.toml"
    config.write_text(SWEEP.format(out=tmp_path / "results"))
    code, _, err = cli("run", "--config", config, "--methods", "uniform", "--n", "100")
    assert code == 0, err
    results = sorted(p.relative_to(tmp_path / "results").as_posix() for p in (tmp_path / "results").rglob("*.json"))
    assert results == ["digits/sigma0.25/budget0.05/uniform-seed0.json", "digits/sigma0.25/fp32-seed0.json"]
    record = json.loads((tmp_path / "results/digits/sigma0.25/budget0.05/uniform-seed0.json").read_text())
    assert record["config"]["protocol"]["n"] == 100 and record["config"]["protocol"]["test_images"] == 8
    settings = record["run_config"]
    assert settings["methods"] == ["uniform"] and settings["n"] == 100 and settings["n0"] == 20
    assert settings["config"] == str(config) and settings["save-models"] is True
    assert record["command"] == f"arqbench run --config {config} --methods uniform --n 100"


def test_plugin_options_come_from_tables(cli, tmp_path):
    config = tmp_path / "sweep.toml"
    config.write_text(SWEEP.format(out=tmp_path / "results").replace('"uniform", "random"', '"haq"')
                      + "[options.haq]\nepisodes = 2\nwarmup = 1\nfinetune_steps = 0\n")
    code, _, err = cli("run", "--config", config)
    assert code == 0, err
    record = json.loads((tmp_path / "results/digits/sigma0.25/budget0.05/haq-seed0.json").read_text())
    assert record["plugins"]["search"]["options"]["episodes"] == 2 and record["search"]["episodes"] == 2


def toml(settings: dict) -> str:
    """``settings`` as a TOML sweep file (TOML has no null: unset values are left out)."""
    lines = [f"{key} = {json.dumps(value)}" for key, value in settings.items() if key != "options" and value is not None]
    for plugin, table in settings.get("options", {}).items():
        lines += [f'[options."{plugin}"]', *(f"{key} = {json.dumps(value)}" for key, value in table.items())]
    return "\n".join(lines) + "\n"


def test_a_recorded_run_config_is_a_sweep_file_that_gives_the_same_settings(tmp_path):
    from arqbench.cli import build_parser, parse, run_settings
    from arqbench.pipeline.usecases import record

    def run_config(*argv):  # what a run records, as cli.main resolves it
        parser = build_parser()
        return record(run_settings(parser, parse(parser, ["run", *map(str, argv)])))

    first = tmp_path / "first.toml"
    first.write_text('methods = ["hawq", "robust-ilp"]\n')
    recorded = run_config("--config", first, "--quantize-ends", "--no-save-models", "--search-activations",
                          "--sigma", "0.25,0.5", "--episodes", "3", "--option", "robust-ilp.metric=disagreement",
                          "--option", "hawq.tie=none", "--out", tmp_path / "results")
    assert recorded["keep-ends"] is False and recorded["save-models"] is False and recorded["config"] == str(first)
    again = tmp_path / "again.toml"
    again.write_text(toml(recorded))
    assert run_config("--config", again) == {**recorded, "config": str(again)}
    again.write_text(toml({**recorded, "keep-ends": True, "save-models": True}))  # true: the defaults
    defaults = run_config("--config", again)
    assert defaults["keep-ends"] is None and defaults["save-models"] is True


@pytest.mark.parametrize("text,message", [
    ("sigmas = [0.25]\n", "unknown setting 'sigmas'; known: .*sigma"),
    ("sigma = 'abc'\n", "--sigma expects comma-separated numbers"),
    ("force = 3\n", "'force' is a switch"),
    ("keep-ends = 'no'\n", "'keep-ends' is a switch"),
    ("sigma = [0.25\n", "is not valid TOML"),
    ("[options]\nhaq = 5\n", "options are \\[options.NAME\\] tables"),
])
def test_a_wrong_sweep_file_is_one_line_naming_it(cli, tmp_path, text, message):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    code, _, err = cli("run", "--config", config, "--out", tmp_path / "results")
    assert code == 2 and str(config) in err and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert not (tmp_path / "results").exists()


def test_a_missing_sweep_file_is_one_line(cli, tmp_path):
    code, _, err = cli("run", "--config", tmp_path / "none.toml")
    assert code == 2 and "does not exist" in err


def test_dry_run_lists_the_cells_writes_nothing_and_trains_nothing(tmp_path):
    out, home = tmp_path / "results", tmp_path / "home"
    home.mkdir()
    env = {"ARQBENCH_HOME": str(home), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    result = run_subprocess("run", "--methods", "uniform,haq", "--budget", "0.05", "--out", out, "--dry-run", *TINY,
                            env=env)
    assert result.returncode == 0, result.stderr
    for method in ("fp32", "uniform", "haq"):
        assert method in result.stdout
    assert "to run" in result.stdout and "nothing was run" in " ".join(result.stderr.split())
    assert not out.exists() and not any(home.iterdir())  # no result, no base model trained


def test_dry_run_knows_which_cells_are_finished(cli, tmp_path, capsys):
    code, _, err = cli("run", "--methods", "uniform", "--budget", "0.05", "--out", tmp_path, *TINY)
    assert code == 0, err
    before = sorted(os.listdir(tmp_path / "digits/sigma0.25/budget0.05"))
    code, out, err = cli("run", "--methods", "uniform,random", "--budget", "0.05", "--out", tmp_path, "--dry-run",
                         *TINY)
    assert code == 0, err
    rows = {line.split()[2] if "0.05" in line else line.split()[1]: line for line in out.splitlines()
            if " seed" not in line and ("fp32" in line or "uniform" in line or "random" in line)}
    assert "finished" in rows["fp32"] and "finished" in rows["uniform"] and "to run" in rows["random"]
    assert "1 of 3 cells to run" in " ".join(err.split())
    assert sorted(os.listdir(tmp_path / "digits/sigma0.25/budget0.05")) == before


def test_dry_run_stage_costs_follow_their_formulas(tmp_path):
    spec = SweepSpec(benchmarks=["digits"], methods=["haq", "robust-ilp", "uniform"], sigmas=[0.25], budgets=[0.05],
                     seeds=[0], out=tmp_path,
                     overrides={"n0": 20, "n": 200, "test_images": 8, "finetune_epochs": 2, "search_activations": True,
                                "options": {"haq": {"episodes": 7, "finetune_steps": 3}, "robust-ilp": {"images": 10},
                                            "irs": {"n_p": 0.1}}})
    estimates, notes = dryrun.estimate(spec)
    by_method = {e.cell.method: e for e in estimates}
    fp32, uniform, haq = by_method["fp32"], by_method["uniform"], by_method["haq"]
    assert fp32.certify == uniform.certify == 8 * (20 + 200) and fp32.finetune == fp32.search == 0
    # digits: 1437 training images, 20% (at most search_images = 300) held out for search
    search_images, finetune_images = 287, 1437 - 287
    assert uniform.finetune == 2 * finetune_images * 3 and uniform.search == 0
    assert haq.search == search_images + 7 * (search_images + 3 * 64 * 3)
    # robust-ilp's paired profile (the default): f on N_p = 20 noisy copies of 10 images, then 5 free layers x 13
    # (w, a) points on the first min(S = 100, N_p) of them
    assert by_method["robust-ilp"].search == 10 * (20 + 20 * 5 * 13)
    # the certified profile: f certified on 10 images, then f's irs estimate and every point by irs
    spec.overrides["options"]["robust-ilp"]["profile"] = "certified"
    certified = next(e for e in dryrun.estimate(spec)[0] if e.cell.method == "robust-ilp")
    assert certified.search == 10 * (20 + 200) + (1 + 5 * 13) * 10 * (20 + 20)
    # MACs of DigitsNet by hand: stem, block1 (2 convs at 8x8), block2 (2 convs and the shortcut at 4x4), fc
    assert uniform.macs == 64 * 16 * 9 + 2 * 64 * 16 * 16 * 9 + 16 * 32 * 16 * 9 + 16 * 32 * 32 * 9 + 16 * 32 * 16 + 320
    assert uniform.seconds == pytest.approx(uniform.forwards / uniform.per_second)
    assert "digits" in notes[0] and "forwards/s" in notes[0]


def test_work_cached_per_base_model_and_seed_is_counted_once_per_seed_not_once_per_budget(tmp_path):
    spec = SweepSpec(benchmarks=["digits"], methods=["hawq", "robust-ilp"], sigmas=[0.25, 0.5],
                     budgets=[0.03, 0.05, 0.1], seeds=[0, 1], out=tmp_path,
                     overrides={"n0": 20, "n": 200, "test_images": 8,
                                "options": {"robust-ilp": {"images": 10}, "irs": {"n_p": 0.1},
                                            "hawq": {"batches": 2, "batch_size": 8, "max_iter": 5}}})
    estimates = [e for e in dryrun.estimate(spec)[0] if e.cell.method != "fp32"]
    profile = 10 * (20 + 20 * 5 * 7)  # as above (paired): f, then 5 free layers x 7 widths
    traces = 5 * 2 * 8 * (3 + 2 * 7)  # probes x batches x batch size x (a backward, two forwards per layer)
    for method, cost in (("robust-ilp", profile), ("hawq", traces)):
        for sigma in (0.25, 0.5):
            for seed in (0, 1):  # the first budget's cell measures what the other budgets' cells reuse
                searches = [e.search for e in estimates
                            if (e.cell.method, e.cell.sigma, e.cell.seed) == (method, sigma, seed)]
                assert searches == [cost, 0, 0], (method, sigma, seed)
        assert sum(e.search for e in estimates if e.cell.method == method) == 2 * 2 * cost  # sigmas x seeds


def test_robust_ilp_profiles_at_most_ten_thousand_samples_per_image(tmp_path):
    spec = SweepSpec(benchmarks=["digits"], methods=["robust-ilp"], sigmas=[0.25], budgets=[0.05], seeds=[0],
                     out=tmp_path, overrides={"n0": 20, "n": 50_000, "test_images": 8,
                                              "options": {"robust-ilp": {"images": 10}, "irs": {"n_p": 0.1}}})
    by_method = {e.cell.method: e for e in dryrun.estimate(spec)[0]}
    # weights only: 5 free layers x 7 widths; f's N_p = n_p x 10,000 samples, not the run's 50,000 (paired: each
    # point on S = 100 of them)
    assert by_method["robust-ilp"].search == 10 * (1_000 + 100 * 5 * 7)
    assert by_method["robust-ilp"].certify == 8 * (20 + 50_000)
    spec.overrides["options"]["robust-ilp"]["profile"] = "certified"  # f's certification and every point capped too
    certified = next(e for e in dryrun.estimate(spec)[0] if e.cell.method == "robust-ilp")
    assert certified.search == 10 * (20 + 10_000) + (1 + 5 * 7) * 10 * (20 + 1_000)
