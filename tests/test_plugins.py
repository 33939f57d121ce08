"""The plugin contract: entry points, the env var, name clashes, and an out-of-tree plugin used by a run."""

import json
import textwrap

import pytest
from conftest import TINY, run_subprocess

from arqbench import plugins
from arqbench.errors import ArqbenchError
from arqbench.hookspecs import hookimpl


def test_every_kind_has_its_first_party_plugins():
    regs = plugins.registries()
    assert set(regs) == {"quantizer", "certifier", "search", "cost_model", "benchmark"}
    assert {"linear"} <= set(regs["quantizer"])
    assert {"rs", "irs"} <= set(regs["certifier"])
    assert {"uniform", "random", "haq", "arq"} <= set(regs["search"])
    assert {"bitops", "size"} <= set(regs["cost_model"])
    assert "digits" in regs["benchmark"]
    assert regs["search"]["uniform"].plugin == "uniform"  # registered through its entry point


def test_core_names_no_method_or_benchmark():
    """The core imports no plugin module; every method and benchmark arrives through the contract."""
    import pathlib

    core = pathlib.Path(plugins.__file__).parent
    for path in core.rglob("*.py"):
        text = path.read_text()
        assert "arqbench.bundled" not in text and "arqbench.baselines" not in text, path


class Clash:
    @hookimpl
    def register_search(self, register):
        register("uniform", object)


def test_a_name_clash_makes_only_that_name_unusable_and_names_both_plugins(capsys):
    plugins.register_plugin(Clash(), "clashing-plugin")
    try:
        regs = plugins.registries()  # no error: every other name still works
        assert "uniform" not in regs["search"] and "haq" in regs["search"]
        assert plugins.clashes() == {("search", "uniform"): ["clashing-plugin", "uniform"]}
        with pytest.raises(ArqbenchError) as error:
            plugins.get("search", "uniform")
        message = str(error.value)
        assert message == ("search 'uniform' is registered by both plugin 'clashing-plugin' and plugin 'uniform', so "
                           "it is unusable; pick one by leaving the other out (ARQBENCH_PLUGINS=-clashing-plugin or "
                           "ARQBENCH_PLUGINS=-uniform) or uninstall one")
        assert f"warning: {message}" in capsys.readouterr().err.replace("\n", "")
        assert message in plugins.problems()
    finally:
        plugins.unregister_plugin("clashing-plugin")
    assert plugins.get("search", "uniform").plugin == "uniform" and not plugins.clashes()


class SecondDefault:
    @hookimpl
    def register_quantizer(self, register):
        register("also-default", object, default=True)


def test_the_defaults_are_registered_not_named_by_the_core():
    assert [plugins.default(kind) for kind in ("benchmark", "quantizer", "cost_model", "certifier")] == \
        ["digits", "linear", "bitops", "rs"]
    assert plugins.default("certifier", "profile") == "irs"
    assert plugins.default("quantizer", "profile") == "linear"  # no default for that use: the kind's default


def test_a_second_default_is_one_warning_and_a_run_must_then_name_its_quantizer(capsys):
    plugins.register_plugin(SecondDefault(), "second-default")
    try:
        assert {"also-default", "linear"} <= set(plugins.names("quantizer"))  # both usable by name
        with pytest.raises(ArqbenchError, match="are both registered as the default, so neither is; name one") as error:
            plugins.default("quantizer")
        assert "quantizer 'also-default' (plugin 'second-default')" in str(error.value)
        assert "quantizer 'linear' (plugin 'linear')" in str(error.value)
        assert "ARQBENCH_PLUGINS=-linear or ARQBENCH_PLUGINS=-second-default" in str(error.value)
        assert f"warning: {error.value}" in capsys.readouterr().err.replace("\n", "")
        assert plugins.default("benchmark") == "digits"  # other kinds keep theirs
    finally:
        plugins.unregister_plugin("second-default")
    assert plugins.default("quantizer") == "linear"


def test_a_third_party_default_is_what_a_run_uses_when_the_bundled_one_is_left_out():
    from arqbench.pipeline.config import resolve

    linear = plugins.pm.get_plugin("linear")
    plugins.unregister_plugin("linear")

    class Mine:
        @hookimpl
        def register_quantizer(self, register):
            register("mine", plugins.registries.__class__, default=True)

    plugins.register_plugin(Mine(), "mine")
    try:
        assert resolve(plugins.create("benchmark", "digits"), {}).quantizer == "mine"
        assert resolve(plugins.create("benchmark", "digits"), {"quantizer": "lsq"}).quantizer == "lsq"
    finally:
        plugins.unregister_plugin("mine")
        plugins.register_plugin(linear, "linear")
    assert resolve(plugins.create("benchmark", "digits"), {}).quantizer == "linear"


def test_without_a_default_a_run_must_name_its_benchmark():
    result = run_subprocess("run", "--methods", "uniform", "--dry-run", env={"ARQBENCH_PLUGINS": "uniform,costs,linear,rs"})
    assert result.returncode == 2
    assert result.stderr.strip() == ("arqbench: error: no installed plugin is the default benchmark; name one (see "
                                     "`arqbench list`), or load arqbench's bundled plugins (ARQBENCH_PLUGINS leaves "
                                     "them out)")


def test_certify_asks_for_a_default_benchmark_only_where_no_file_names_one(tmp_path):
    env = {"ARQBENCH_PLUGINS": "uniform,costs,linear,rs"}
    result = run_subprocess("certify", "--model", tmp_path / "missing.pt", env=env)
    assert result.returncode == 2 and "missing.pt" in result.stderr and "default" not in result.stderr
    result = run_subprocess("certify", env=env)
    assert result.returncode == 2 and "no installed plugin is the default benchmark" in result.stderr


def test_unknown_names_list_the_available_ones():
    with pytest.raises(ArqbenchError, match=r"unknown search 'nope'; available: .*uniform"):
        plugins.get("search", "nope")


def test_env_var_restricts_which_plugins_load(tmp_path):
    result = run_subprocess("list", env={"ARQBENCH_PLUGINS": "digits,uniform,costs"})
    assert result.returncode == 0, result.stderr
    assert "uniform" in result.stdout and "digits" in result.stdout
    assert "random" not in result.stdout and "linear" not in result.stdout


def write_out_of_tree_plugin(root):
    """A third-party package with an entry point in group 'arqbench', installed by putting it on sys.path."""
    (root / "my_search.py").write_text(textwrap.dedent('''
        from arqbench.hookspecs import hookimpl
        from arqbench.quantization.policy import uniform_policy
        from arqbench.search.context import SearchResult

        class AllFour:
            """Every free layer at 4-bit weights, then the action wall."""
            def search(self, ctx):
                return SearchResult(ctx.within_budget(uniform_policy(ctx.layers, 4, 8, ctx.fixed)), {"made_by": "my-search"})

        @hookimpl
        def register_search(register):
            register("allfour", AllFour)
    '''))
    dist = root / "my_search-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-search\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[arqbench]\nmysearch = my_search\n")


def test_an_out_of_tree_plugin_is_listed_and_used_by_a_run(tmp_path):
    write_out_of_tree_plugin(tmp_path)
    env = {"PYTHONPATH": str(tmp_path)}
    listed = run_subprocess("list", env=env)
    assert "allfour" in listed.stdout and "mysearch" in listed.stdout
    out = tmp_path / "results"
    result = run_subprocess("run", "--methods", "allfour", "--sigma", "0.25", "--budget", "0.05", "--out", out,
                            *TINY, env=env)
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "digits" / "sigma0.25" / "budget0.05" / "allfour-seed0.json").read_text())
    assert record["status"] == "ok" and record["search"] == {"made_by": "my-search"}
    assert record["versions"]["plugins"]["mysearch"] == "1.0"
    assert {tuple(bits) for name, bits in record["policy"].items()} <= {(8, 8), (4, 8)}


def test_a_plugin_that_fails_to_import_is_one_clear_line(tmp_path):
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    dist = tmp_path / "broken-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[arqbench]\nbroken = broken_plugin\n")
    result = run_subprocess("list", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "arqbench: error: plugin 'broken' (broken_plugin) failed to import: RuntimeError: boom at import; "
        "fix or uninstall it, or leave it out with ARQBENCH_PLUGINS=-broken"]
    result = run_subprocess("list", env={"PYTHONPATH": str(tmp_path), "ARQBENCH_PLUGINS": "-broken"})
    assert result.returncode == 0 and not result.stderr and "uniform" in result.stdout  # every other plugin loads


def test_a_benchmarks_default_options_reach_installed_plugins_only():
    """A benchmark may set its searches' defaults; one for a search that is not installed is dropped, not an error
    (a user's --option for it still is: check_plugins)."""
    from dataclasses import replace

    from arqbench.pipeline.config import resolve

    digits = plugins.create("benchmark", "digits")
    bench = replace(digits, defaults={**digits.defaults, "options": {"haq": {"finetune_steps": 3},
                                                                     "no-such-search": {"finetune_steps": 3}}})
    protocol = resolve(bench, {"options": {"haq": {"warmup": 2}}})
    assert protocol.options == {"haq": {"finetune_steps": 3, "warmup": 2}}
    assert protocol.create("search", "haq").finetune_steps == 3
