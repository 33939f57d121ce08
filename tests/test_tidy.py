"""A run leaves nothing outside --out and ARQBENCH_HOME (no temp folders, logs or caches), whether it finishes or is
interrupted; its messages stay one line each in a pipe; --help shows every default; every flag does something."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import TINY

from arqbench import plugins
from arqbench.cli import HelpFormatter, build_parser, main
from arqbench.models.base_model import trained_path

RL_SEARCH = ["run", "--methods", "haq,arq,hawq", "--budget", "0.05", "--episodes", "2", "--option", "haq.warmup=1",
             "--option", "arq.warmup=1", "--option", "hawq.batches=1", "--option", "hawq.max_iter=2", *TINY]


def isolated(tmp_path):
    """A fresh temp directory, home directory and working directory for one arqbench process."""
    places = {name: tmp_path / name for name in ("tmp", "home", "cwd")}
    for place in places.values():
        place.mkdir()
    env = dict(os.environ, TMPDIR=str(places["tmp"]), HOME=str(places["home"]), COLUMNS="40",
               XDG_CACHE_HOME=str(places["home"] / ".cache"), XDG_CONFIG_HOME=str(places["home"] / ".config"))
    for variable in ("TORCHINDUCTOR_CACHE_DIR", "MPLCONFIGDIR", "SB3_LOGDIR"):
        env.pop(variable, None)
    return places, env


def left_in(places) -> dict:
    return {name: sorted(str(p.relative_to(place)) for p in place.rglob("*")) for name, place in places.items()}


def test_an_rl_search_leaves_temp_home_and_working_directory_as_it_found_them(tmp_path):
    places, env = isolated(tmp_path)
    out = tmp_path / ("a-results-folder-with-a-long-name-" * 4) / "out"  # a message naming it is longer than 40 columns
    result = subprocess.run([sys.executable, "-m", "arqbench.cli", *RL_SEARCH, "--out", out], env=env,
                            cwd=places["cwd"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert left_in(places) == {"tmp": [], "home": [], "cwd": []}
    lines = result.stderr.splitlines()  # COLUMNS=40, and still each message is one line
    assert "4 cells run, 0 reused, 0 failed" in lines[-1] and lines[-1].endswith(f"results in {out}"), lines
    warning = next(line for line in lines if line.startswith("warning: digits sigma=0.25: radii"))
    assert warning.endswith("certifying 0.5 needs --n 301 or more"), lines
    assert all(line.startswith(("[", "warning: ")) for line in lines[:-1]), lines


def test_an_interrupted_rl_search_leaves_nothing_behind_either(tmp_path):
    places, env = isolated(tmp_path)
    long_search = [("500" if previous == "--episodes" else arg) for previous, arg in zip([None, *RL_SEARCH], RL_SEARCH)]
    # a search long enough that the run cannot finish before the signal lands, even on a loaded machine
    process = subprocess.Popen([sys.executable, "-m", "arqbench.cli", *long_search, "--out", tmp_path / "out"],
                               env=env, cwd=places["cwd"], stderr=subprocess.PIPE, text=True)
    for line in process.stderr:  # interrupt once the HAQ search is under way
        if "haq seed=0" in line:
            break
    time.sleep(2)  # the cell's line is printed before its work starts: let the search begin
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=300)
    assert process.returncode == 130 and "interrupted" in rest
    assert left_in(places) == {"tmp": [], "home": [], "cwd": []}


def flags():
    """(subcommand, argparse action) for every flag of every subcommand."""
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    return [(name, action) for name, sub in commands.items() for action in sub._actions
            if action.option_strings and action.dest != "help"]


@pytest.mark.parametrize("command, action", flags(), ids=lambda v: v if isinstance(v, str) else v.option_strings[-1])
def test_every_flag_has_help_text_that_states_its_default(command, action):
    assert action.help
    if action.nargs != 0:  # a boolean flag is off unless given
        assert "default" in HelpFormatter(command)._get_help_string(action)


def test_run_help_prints_every_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps help to the terminal; here, one line per flag
    with pytest.raises(SystemExit) as done:
        main(["run", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # one space between words
    for shown in ("--sigma SIGMA noise level(s), comma list (default: 0.25)", "(default: 0.025)", "seed(s), comma list "
                  "(default: 0)", "--out OUT results directory (default: arqbench-results)", "(default: rs)",
                  "(default: linear)", "(default: bitops)", "default 0.1", "(default: 0.001)"):
        assert shown in text
    n = {name: str(plugins.create("benchmark", name).defaults["n"]) for name in plugins.names("benchmark")}
    assert f"{n['digits']} (digits" in text and f"{n['resnet20-cifar10']} (" in text  # each benchmark's own
    episodes = text.split("= --option NAME.episodes=N for each (default: ", 1)[1].split("--np", 1)[0]
    assert episodes.startswith("each plugin's own: ") and "600 (arq, haq" in episodes  # no benchmark lowers it


def test_train_checkpoint_fine_tunes_from_that_checkpoint(cli, tmp_path):
    bench = plugins.create("benchmark", "digits")
    start = trained_path(bench, 0.25)
    if not start.is_file():
        assert cli("train", "--epochs", "1", "--sigma", "0.25")[0] == 0
        start = trained_path(bench, 0.25, epochs=1)
    code, _, err = cli("train", "--checkpoint", start, "--epochs", "1", "--sigma", "0.5")
    assert code == 0 and f"trained digits sigma=0.5 from {start}: " in err and "use it with --checkpoint" in err
    tuned = trained_path(bench, 0.5, epochs=1, init=start)
    assert cli("train", "--epochs", "1", "--sigma", "0.5")[0] == 0
    scratch = trained_path(bench, 0.5, epochs=1)
    assert tuned != scratch  # stored apart: a run never takes the fine-tuned model for the recipe's
    weights = {p: torch.load(p, weights_only=True)["state_dict"] for p in (start, tuned, scratch)}
    distance = lambda a, b: sum((weights[a][k].float() - weights[b][k].float()).norm() ** 2 for k in weights[a]) ** 0.5
    assert distance(tuned, start) < distance(scratch, start) / 2  # one epoch moved it little from where it began
