import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

SCRATCH = Path(__file__).resolve().parents[1] / ".pytest-tmp"  # git-ignored
PUBLISHED_02 = Path(__file__).resolve().parents[1] / "leaderboards" / "results-0.2"  # 0.2's cells, kept as published
PLACES = {"TMPDIR": "tmp", "ARQBENCH_HOME": "home", "XDG_CACHE_HOME": "cache"}
_saved_environment: dict = {}


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Everything the suite writes stays in the checkout's ``.pytest-tmp/``, emptied when a session starts and
    removed when one passes: pytest's ``tmp_path`` folders (``--basetemp``, unless given), the session's
    ``ARQBENCH_HOME`` (the digits base model is trained once and shared), ``TMPDIR`` (what libraries and
    subprocesses put in the temp directory, Ray's session folder among them) and ``XDG_CACHE_HOME`` (pip's
    cache, in place of ~/.cache). One session per checkout at a time. Set before the test modules import arqbench, so library caches (matplotlib's) land there too."""
    shutil.rmtree(SCRATCH, ignore_errors=True)
    if config.option.basetemp is None:
        config.option.basetemp = str(SCRATCH / "pytest")
    for variable, folder in PLACES.items():
        (SCRATCH / folder).mkdir(parents=True)
        _saved_environment[variable] = os.environ.get(variable)
        os.environ[variable] = str(SCRATCH / folder)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again

    from arqbench.runtime import keep_caches_home, keep_freed_memory

    keep_caches_home()  # as the CLI does
    keep_freed_memory()  # as the CLI does: tests run models at the speed users see


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 0:
        shutil.rmtree(SCRATCH, ignore_errors=True)  # a failed session's folders stay until the next starts


def pytest_unconfigure(config):
    for variable, value in _saved_environment.items():
        if value is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = value
    tempfile.tempdir = None


# Small but real protocol settings for tests: a few images, few samples.
TINY = ["--n0", "20", "--n", "200", "--test-images", "8", "--batch-size", "200", "--finetune-epochs", "1"]


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""
    from arqbench.cli import main

    def run(*args):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def run_subprocess(*args, env=None, cwd=None):
    """Run the installed console script exactly as a user would."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "arqbench.cli", *map(str, args)], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=600)


@pytest.fixture(scope="session")
def quick_digits_checkpoint(tmp_path_factory):
    """A digits base model noise-trained for 2 epochs at sigma 0.25 (``--checkpoint``), so tests that need a
    plausible model do not wait for the full recipe."""
    import torch

    from arqbench import plugins
    from arqbench.models import checkpoints
    from arqbench.models.training import train

    benchmark = plugins.create("benchmark", "digits")
    torch.manual_seed(0)
    model = benchmark.build_model()
    train(model, benchmark.splits(None).train, benchmark.recipe, 0.25, torch.device("cpu"), 0, epochs=2)
    path = tmp_path_factory.mktemp("quick-digits") / "digits.pt"
    checkpoints.save(model, path, benchmark="digits", sigma=0.25)
    return path
