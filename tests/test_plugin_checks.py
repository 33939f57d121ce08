"""The door checks what comes through it (DESIGN §3): a plugin author's mistakes, each installed out of tree from a
distribution whose name is not its modules', give one line that names the plugin and the rule, at load or at use;
a failed cell keeps its traceback; the plugin's version is its distribution's."""

import json
import textwrap

import pandas

from conftest import TINY, run_subprocess

DIST, VERSION = "acme-arqbench-tools", "2.5.1"

MISTAKES = '''
import torch

from arqbench.contract import SearchResult
from arqbench.hookspecs import hookimpl
from arqbench.toolkit import uniform_policy


class Boom:
    def search(self, ctx):
        raise NotImplementedError()


class Untied:
    """4-bit weights everywhere but the first tied pair: one at 3 bits, the other at 8."""

    def search(self, ctx):
        policy = uniform_policy(ctx.layers, 4, 8, ctx.fixed)
        first, second = ctx.tied[0][:2]
        policy[first], policy[second] = (3, 8), (8, 8)
        return SearchResult(policy, {})


class Picky:
    def __init__(self, strength=None):
        if strength is None:
            raise ValueError()


class InPlace:
    """Rounds the float model's weights in place and returns it."""

    def quantize(self, model, policy, calibration):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.copy_(parameter.round())
        return model


class AsDict:
    def quantize(self, model, policy, calibration):
        return {"state_dict": model.state_dict()}


@hookimpl
def register_search(register):
    register("boom", Boom)
    register("untied", Untied)
    register("picky", Picky)


@hookimpl
def register_quantizer(register):
    register("in-place", InPlace)
    register("as-dict", AsDict)


@hookimpl
def register_cost_model(register):
    register("size", object)  # a clash with a built-in cost model
'''

TYPO = '''
from arqbench.hookspecs import hookimpl


@hookimpl
def register_serach(register):
    register("typo-search", object)
'''

BARE = '''
def register_search(register):
    register("bare-search", object)
'''

WRONG_ARGUMENT = '''
from arqbench.hookspecs import hookimpl


@hookimpl
def register_search(reg):
    reg("wrong-search", object)
'''


def install(root, entry_points: dict[str, str]) -> dict:
    """``entry_points`` (name -> module) installed as distribution DIST: the modules on sys.path beside the
    ``*.dist-info`` pip would write. Returns the environment that sees them."""
    for module, code in {"acme_mistakes": MISTAKES, "acme_typo": TYPO, "acme_bare": BARE,
                         "acme_wrong": WRONG_ARGUMENT}.items():
        (root / f"{module}.py").write_text(textwrap.dedent(code))
    info = root / f"{DIST.replace('-', '_')}-{VERSION}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: {VERSION}\n")
    (info / "entry_points.txt").write_text("[arqbench]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    return {"PYTHONPATH": str(root)}


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


def test_a_misspelt_hook_a_missing_hookimpl_and_a_clash_are_one_warning_each_and_list_still_works(tmp_path):
    env = install(tmp_path, {"typo": "acme_typo", "bare": "acme_bare", "mistakes": "acme_mistakes", "wrong": "acme_wrong"})
    listed = run_subprocess("list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert warnings_of(listed.stderr) == [
        "warning: plugin 'wrong' is left out: Plugin 'wrong' for hook 'register_search'; hookimpl definition: "
        "register_search(reg); Argument(s) {'reg'} are declared in the hookimpl but can not be found in the hookspec "
        "(a hook takes one argument, register)",
        "warning: plugin 'typo' implements hook register_serach, which arqbench does not know, so it is never "
        "called: did you mean register_search? (hooks: register_quantizer, register_certifier, register_search, "
        "register_cost_model, register_benchmark)",
        "warning: plugin 'bare' registers nothing: its register_search has no @hookimpl (from arqbench.hookspecs "
        "import hookimpl, then @hookimpl above the def)",
        "warning: cost model 'size' is registered by both plugin 'costs' and plugin 'mistakes', so it is unusable; "
        "pick one by leaving the other out (ARQBENCH_PLUGINS=-costs or ARQBENCH_PLUGINS=-mistakes) or uninstall one"]
    assert "boom" in listed.stdout and "bitops" in listed.stdout and "unusable: a clash" in listed.stdout

    clash = run_subprocess("run", "--methods", "uniform", "--cost-model", "size", "--dry-run", env=env)
    assert clash.returncode == 2
    assert clash.stderr.splitlines()[-1] == "arqbench: error: " + warnings_of(listed.stderr)[3].removeprefix("warning: ")

    excluded = run_subprocess("list", env={**env, "ARQBENCH_PLUGINS": "-mistakes,-typo,-bare,-wrong"})
    assert excluded.returncode == 0 and not excluded.stderr and "boom" not in excluded.stdout
    assert "size" in excluded.stdout and "uniform" in excluded.stdout


def test_a_constructor_that_refuses_its_defaults_says_so(tmp_path):
    env = install(tmp_path, {"mistakes": "acme_mistakes"})
    result = run_subprocess("run", "--methods", "picky", "--dry-run", env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == ("arqbench: error: search 'picky' (plugin 'mistakes') could not be built "
                                              "with its default options: ValueError (with no message)")


def test_breaches_at_use_fail_their_cell_with_one_line_and_a_kept_traceback(tmp_path, quick_digits_checkpoint):
    env = install(tmp_path, {"mistakes": "acme_mistakes"})
    out = tmp_path / "results"
    result = run_subprocess("--debug", "run", "--methods", "boom,untied,uniform", "--sigma", "0.25", "--budget", "0.5",
                            "--checkpoint", quick_digits_checkpoint, "--out", out, *TINY, env=env)
    assert result.returncode == 1, result.stderr
    folder = out / "digits" / "sigma0.25" / "budget0.5"
    boom = json.loads((folder / "boom-seed0.json").read_text())
    assert boom["status"] == "failed"
    assert boom["error"] == "search 'boom' (plugin 'mistakes') raised NotImplementedError (with no message)"
    assert "acme_mistakes.py" in boom["traceback"] and boom["traceback"].rstrip().endswith("NotImplementedError")
    assert boom["traceback"] in result.stderr  # --debug: printed as it happened
    untied = json.loads((folder / "untied-seed0.json").read_text())
    assert untied["error"] == ("search 'untied' (plugin 'mistakes') broke the contract: tied layers net.block2.conv1 "
                               "(3, 8) and net.block2.shortcut.0 (8, 8) must share one precision (ctx.tied)")
    uniform = json.loads((folder / "uniform-seed0.json").read_text())
    assert uniform["status"] == "ok" and uniform["versions"]["plugins"]["mistakes"] == VERSION

    shown = run_subprocess("show", folder / "boom-seed0.json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert boom["error"] in shown.stdout and "raise NotImplementedError()" in shown.stdout

    board = run_subprocess("leaderboard", "--results", out, "--format", "csv", env=env)
    assert board.returncode == 0, board.stderr
    rows = pandas.read_csv(out / "digits.csv")
    ranked = set(rows[rows["rank"].notna()]["method"])
    assert "uniform" in ranked and not ranked & {"boom", "untied"}  # refused before any ranking


def test_a_quantizer_that_changes_the_float_model_or_returns_no_model_is_refused(tmp_path, quick_digits_checkpoint):
    env = install(tmp_path, {"mistakes": "acme_mistakes"})
    for quantizer, rule in (("in-place", "quantize changed the float model it was given; quantize a copy "
                                         "(toolkit.quantized_copy copies it for you)"),
                            ("as-dict", "quantize returned a dict, not a torch.nn.Module (a quantized copy of the "
                                        "model)")):
        out = tmp_path / quantizer
        result = run_subprocess("run", "--methods", "uniform", "--quantizer", quantizer, "--sigma", "0.25", "--budget",
                                "0.5", "--checkpoint", quick_digits_checkpoint, "--out", out, *TINY, env=env)
        assert result.returncode == 1, result.stderr
        record = json.loads((out / "digits" / "sigma0.25" / "budget0.5" / "uniform-seed0.json").read_text())
        assert record["error"] == f"quantizer '{quantizer}' (plugin 'mistakes') broke the contract: {rule}"
        fp32 = json.loads((out / "digits" / "sigma0.25" / "fp32-seed0.json").read_text())
        assert fp32["status"] == "ok"
