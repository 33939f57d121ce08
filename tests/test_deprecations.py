"""Plugin API 2.0 removed what 0.1 plugins leaned on (arqbench 0.4): an old import or setting now fails with one
line naming what to write instead (``arqbench._moved.MOVED`` is the directions). What plugin API 1.1 and 2.0
deprecated still works, with a ``PluginAPIDeprecation`` saying it goes in 0.5."""

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import arqbench.bundled  # noqa: F401  (adds the first-party plugins' moved modules to the table)
from arqbench import _moved, plugins, toolkit
from arqbench.contract import Benchmark, TrainRecipe
from arqbench.errors import ArqbenchError
from arqbench.hookspecs import hookimpl
from arqbench.pipeline.timing import search_timing
from conftest import run_subprocess

FIXTURES = Path(__file__).parent / "fixtures"
REMOVED = "and its old name was removed in arqbench 0.4: write"
PACKAGES = {"arqbench.search", "arqbench.smoothing"}  # old modules that are packages now


def suggested_imports(line: str) -> list[tuple[str, list[str]]]:
    return [(module, names.split(", ")) for module, names in re.findall(r"`from (\S+) import ([^`]+)`", line)]


@pytest.mark.parametrize("old", sorted(set(_moved.MOVED) - PACKAGES))
def test_every_moved_module_fails_with_one_line_whose_imports_work(old):
    new = _moved.MOVED[old]
    with pytest.raises(ImportError) as error:
        importlib.import_module(old)
    line = str(error.value)
    assert "\n" not in line and line.startswith(f"{old} moved to {new}, {REMOVED} ")
    assert f"`from {new} import ...`" in line
    suggested = suggested_imports(line)
    for module, names in suggested:  # every name it suggests is importable where it says
        if names != ["..."]:
            assert module in _moved.DOOR and all(hasattr(importlib.import_module(module), n) for n in names), line
    door = {n for door in _moved.DOOR for n in importlib.import_module(door).__all__}
    expected = sorted(n for n in door if hasattr(importlib.import_module(new), n)) if old in _moved.CORE else []
    assert sorted(n for module, names in suggested if module != new for n in names) == (
        [] if new in _moved.DOOR else expected)  # the plugin API's names the module holds, none for a plugin's


def test_the_table_holds_every_module_that_moved_and_points_at_modules_that_exist():
    assert {"arqbench.benchmark", "arqbench.normalize", "arqbench.data", "arqbench.interfaces", "arqbench.results",
            "arqbench.bundled.irs", "arqbench.bundled.robust_ilp"} <= set(_moved.MOVED)
    for new in set(_moved.MOVED.values()):
        importlib.import_module(new)


def test_an_old_import_fails_with_its_one_line_as_the_last_line_of_a_traceback():
    done = subprocess.run([sys.executable, "-c", "import arqbench.results"], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"ImportError: arqbench.results moved to arqbench.pipeline.results, {REMOVED} "
        "`from arqbench.pipeline.results import ...`")


@pytest.mark.parametrize("statement,line", [
    ("from arqbench.search import SearchResult",
     f"arqbench.search.SearchResult moved to arqbench.search.context, {REMOVED} "
     "`from arqbench.contract import SearchResult`"),
    ("from arqbench.smoothing import certify_many",
     f"arqbench.smoothing.certify_many moved to arqbench.smoothing.core, {REMOVED} "
     "`from arqbench.toolkit import certify_many`"),
    ("from arqbench.search import calibration_batches",  # the core's, not the plugin API's
     f"arqbench.search.calibration_batches moved to arqbench.search.context, {REMOVED} "
     "`from arqbench.search.context import calibration_batches`"),
])
def test_a_former_name_of_a_module_that_is_a_package_now_names_its_import(statement, line):
    with pytest.raises(ImportError) as error:
        exec(statement, {})
    assert str(error.value) == line
    package, name = statement.split()[1], statement.split()[-1]
    with pytest.raises(AttributeError) as error:
        getattr(importlib.import_module(package), name)
    assert str(error.value) == line


def test_a_name_the_old_module_never_had_is_the_usual_error_and_submodules_still_import():
    with pytest.raises(ImportError, match="cannot import name 'NoSuchThing' from 'arqbench.search'"):
        from arqbench.search import NoSuchThing  # noqa: F401
    from arqbench.search import sensitivity  # a submodule of the package

    assert sensitivity.__name__ == "arqbench.search.sensitivity"


def test_a_0_1_plugin_fails_to_load_with_one_line_naming_the_import_to_write(tmp_path):
    """The real 0.1 digits plugin (``from arqbench.benchmark import Benchmark, Splits, TrainRecipe``), installed
    out of tree: ``arqbench list`` stops on its first removed import, saying what to write."""
    shutil.copy(FIXTURES / "old_style_digits.py", tmp_path / "old_digits.py")
    dist = tmp_path / "old_digits-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: old-digits\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[arqbench]\nold_digits = old_digits\n")
    result = run_subprocess("list", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("arqbench: error: plugin 'old_digits' (old_digits) failed to import: ImportError: "
                           f"arqbench.benchmark moved to arqbench.models.benchmark, {REMOVED} `from arqbench.contract "
                           "import ") and line.endswith("; fix or uninstall it, or leave it out with "
                                                        "ARQBENCH_PLUGINS=-old_digits")
    [(_, names)] = [s for s in suggested_imports(line) if s[0] == "arqbench.contract"]
    assert {"Benchmark", "Splits", "TrainRecipe"} <= set(names)


RECIPE = TrainRecipe(epochs=1, lr=0.1, batch_size=8, lr_step=1, weight_decay=0.0)


@pytest.mark.parametrize("settings,line", [
    ({"gamma": 0.99}, "Benchmark(gamma=0.99) was removed in arqbench 0.4: gamma is an option of the irs certifier; "
                      "write defaults={'options': {'irs': {'gamma': 0.99}}}"),
    ({"defaults": {"n": 2000, "episodes": 100}},
     "Benchmark defaults['episodes'] was removed in arqbench 0.4: it is an option of the RL searches (haq, arq); "
     "write defaults={'options': {'*': {'episodes': 100}}}"),
    ({"defaults": {"np": 0.2}}, "Benchmark defaults['np'] was removed in arqbench 0.4: it is the irs certifier's "
                                "option n_p; write defaults={'options': {'irs': {'n_p': 0.2}}}"),
])
def test_a_0_1_benchmark_setting_fails_with_one_line_saying_what_to_write(settings, line):
    def old():
        return Benchmark(name="old", num_classes=2, input_shape=(1, 2, 2), radii=(0.5,), recipe=RECIPE,
                         finetune=RECIPE, **settings)

    class OldBenchmark:
        @hookimpl
        def register_benchmark(self, register):
            register("old-benchmark", old)

    with pytest.raises(TypeError) as error:
        old()
    assert str(error.value) == line
    plugins.register_plugin(OldBenchmark(), "old-benchmark-plugin")
    try:
        with pytest.raises(ArqbenchError) as error:
            plugins.create("benchmark", "old-benchmark")
        assert str(error.value) == ("benchmark 'old-benchmark' (plugin 'old-benchmark-plugin') could not be built "
                                    f"with its default options: {line}")
    finally:
        plugins.unregister_plugin("old-benchmark-plugin")
    written = {"defaults": {"n": 2000, "options": {"irs": {"gamma": 0.99}, "*": {"episodes": 100}}}}
    assert Benchmark(name="new", num_classes=2, input_shape=(1, 2, 2), radii=(0.5,), recipe=RECIPE,
                     finetune=RECIPE, **written).defaults == written["defaults"]  # what the line says works


def test_the_toolkits_deprecated_names_still_work_with_a_warning_saying_they_go_in_0_5():
    with pytest.warns(_moved.PluginAPIDeprecation, match=r"^arqbench\.toolkit\.sensitivity is deprecated \(plugin API "
                      r"1\.1\) and goes in arqbench 0\.5: write `from arqbench\.toolkit import sensitivity_profile, "):
        module = toolkit.sensitivity
    assert module.profile is toolkit.sensitivity_profile and module.Profile is toolkit.SensitivityProfile
    with pytest.warns(_moved.PluginAPIDeprecation, match=r"^arqbench\.toolkit\.keep_old_imports is deprecated \(plugin "
                      r"API 2\.0\) and goes in arqbench 0\.5: write `from arqbench\.toolkit import moved_modules "):
        from arqbench.toolkit import keep_old_imports
    assert keep_old_imports is toolkit.moved_modules
    assert not {"sensitivity", "keep_old_imports"} & set(toolkit.__all__)


class Timed:
    @staticmethod
    def recorded_search_timing(info, timing):
        return {"search_s": 1.0, "search_reused_s": 2.0}


class TimedPlugin:
    @hookimpl
    def register_search(self, register):
        register("timed", Timed)


def test_a_search_that_derives_old_files_timing_is_still_read_with_a_warning_saying_until_0_5():
    """contract.TimedSearch (recorded_search_timing), deprecated in plugin API 1.1."""
    plugins.register_plugin(TimedPlugin(), "timed-plugin")
    try:
        with pytest.warns(_moved.PluginAPIDeprecation, match=r"^search 'timed' derives old files' search time .*"
                          r"deprecated in plugin API 1\.1, not read from arqbench 0\.5;"):
            parts = search_timing({"method": "timed", "timing": {"search_s": 3.0}, "search": {}})
    finally:
        plugins.unregister_plugin("timed-plugin")
    assert parts["search_s"] == 1.0 and parts["search_cost_s"] == 3.0
