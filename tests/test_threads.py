"""--threads: torch's CPU thread count for a run's work, the benchmark's measured preference by default,
recorded in every result and used by the dry run's probe."""

import json

import pytest
import torch

from arqbench import runtime
from arqbench.models.benchmark import Benchmark
from conftest import TINY


@pytest.fixture
def two_threads():
    """The caller's thread count is torch's usual 2, so a run that ends up with 1 chose it."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def cell(out, name="uniform-seed0.json", budget="budget0.05"):
    return json.loads((out / "digits" / "sigma0.25" / budget / name).read_text())


def test_a_run_uses_the_benchmarks_preferred_count_and_records_it(cli, tmp_path, two_threads, quick_digits_checkpoint):
    out = tmp_path / "out"
    code, _, err = cli("run", "--methods", "uniform", "--budget", "0.05", "--out", out, "--checkpoint",
                       quick_digits_checkpoint, *TINY)
    assert code == 0, err
    fp32 = json.loads((out / "digits" / "sigma0.25" / "fp32-seed0.json").read_text())
    assert cell(out)["versions"]["threads"] == fp32["versions"]["threads"] == 1  # digits declares 1
    assert cell(out)["run_config"]["threads"] is None  # not given: the benchmark's
    assert torch.get_num_threads() == 2  # the caller's setting is back


def test_the_flag_wins_and_is_recorded(cli, tmp_path, quick_digits_checkpoint):
    out = tmp_path / "out"
    before = torch.get_num_threads()
    code, _, err = cli("run", "--methods", "uniform", "--budget", "0.05", "--out", out, "--threads", "2",
                       "--checkpoint", quick_digits_checkpoint, *TINY)
    assert code == 0, err
    assert cell(out)["versions"]["threads"] == 2
    assert cell(out)["run_config"]["threads"] == 2
    assert torch.get_num_threads() == before


def test_the_dry_run_probes_at_the_runs_thread_count(cli, tmp_path, two_threads):
    code, out, err = cli("run", "--dry-run", "--methods", "uniform", "--out", tmp_path / "out", *TINY)
    assert code == 0, err
    text = " ".join((out + err).split())
    assert "(batch 200, 1 CPU thread)" in text  # digits' preference, not the caller's 2
    code, out, err = cli("run", "--dry-run", "--methods", "uniform", "--out", tmp_path / "out", "--threads", "3", *TINY)
    assert code == 0, err
    assert "(batch 200, 3 CPU threads)" in " ".join((out + err).split())
    assert torch.get_num_threads() == 2


def test_the_count_a_benchmark_runs_at():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    prefers_one = Benchmark("b", 10, (1, 8, 8), (0.25,), None, None, threads=1)
    no_preference = Benchmark("b", 10, (1, 8, 8), (0.25,), None, None)
    assert runtime.thread_count(cpu, None, prefers_one) == 1
    assert runtime.thread_count(cpu, None, no_preference) is None  # torch's default stays
    assert runtime.thread_count(cuda, None, prefers_one) is None  # a preference for the CPU's work only
    assert runtime.thread_count(cpu, 3, prefers_one) == runtime.thread_count(cuda, 3, no_preference) == 3


def test_set_for_a_block_and_restored():
    before = torch.get_num_threads()
    with runtime.threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with runtime.threads(None):
        assert torch.get_num_threads() == before


@pytest.mark.parametrize("command", [["run", "--dry-run"], ["certify"], ["profile"], ["train"]])
@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_thread_count_is_one_line(cli, command, value):
    code, out, err = cli(*command, f"--threads={value}")
    assert code == 2
    assert err.strip() == f"arqbench: error: --threads expects a positive integer, got '{value}'"


@pytest.mark.parametrize("command", ["run", "certify", "profile", "train"])
def test_help_documents_the_flag(capsys, monkeypatch, command):
    from arqbench.cli import main

    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--threads N CPU threads of torch's operators, recorded in each result (default: on the CPU the " \
           "benchmark's measured preference" in text
