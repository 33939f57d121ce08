import os
import subprocess
import sys

import pytest

from arqbench.runtime import keep_freed_memory

keep_freed_memory()  # as the CLI does: tests run models at the speed users see


@pytest.fixture(scope="session", autouse=True)
def arqbench_home(tmp_path_factory):
    """One cache home per test session: the digits base model is trained once and shared."""
    home = tmp_path_factory.mktemp("arqbench-home")
    old = os.environ.get("ARQBENCH_HOME")
    os.environ["ARQBENCH_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("ARQBENCH_HOME", None)
    else:
        os.environ["ARQBENCH_HOME"] = old


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
