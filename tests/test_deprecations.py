"""Plugins written against older import paths keep loading for one minor version, each moved name warning with
the import to write instead (arqbench._moved), and 0.1's Benchmark(gamma=) and defaults["episodes"] land in the
plugin options they became."""

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from arqbench import _moved

FIXTURES = Path(__file__).parent / "fixtures"

LOAD_OLD_PLUGIN = """
import json, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    from arqbench import plugins
    from arqbench.pipeline.config import resolve
    benchmark = plugins.create("benchmark", "digits")
    protocol = resolve(benchmark, {})
model = benchmark.build_model()
splits = benchmark.splits(None)
print(json.dumps({
    "module": type(benchmark).__module__, "warnings": [str(w.message) for w in caught],
    "categories": sorted({w.category.__name__ for w in caught}), "files": sorted({w.filename for w in caught}),
    "episodes": protocol.plugin_options("search", "haq")["episodes"], "gamma": protocol.plugin_options("certifier", "irs")["gamma"],
    "n": protocol.n, "test": len(splits.test), "params": sum(p.numel() for p in model.parameters()),
}))
"""


def test_a_benchmark_plugin_written_before_the_core_was_grouped_still_loads(tmp_path):
    """The real 0.1 digits plugin (``from arqbench.benchmark import Benchmark, Splits, TrainRecipe``,
    ``arqbench.normalize``, ``arqbench.data``, ``gamma=``, ``episodes`` in its defaults), installed out of tree."""
    shutil.copy(FIXTURES / "old_style_digits.py", tmp_path / "old_digits.py")
    dist = tmp_path / "old_digits-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: old-digits\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[arqbench]\nold_digits = old_digits\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path), "ARQBENCH_PLUGINS": "old_digits,linear,rs,irs,haq,costs"}
    done = subprocess.run([sys.executable, "-c", LOAD_OLD_PLUGIN], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["module"] == "old_digits" and out["test"] == 360 and out["params"] > 0
    said = out["warnings"]
    for name, home in [("Benchmark", "arqbench.contract"), ("Splits", "arqbench.contract"),
                       ("TrainRecipe", "arqbench.contract"), ("Normalized", "arqbench.toolkit"),
                       ("permutation", "arqbench.toolkit")]:
        assert any(f"`from {home} import {name}`" in w for w in said), (name, said)
    assert any("arqbench.benchmark is deprecated" in w for w in said)
    assert any("gamma is an option of the irs certifier" in w for w in said)
    assert any("defaults['episodes']" in w and "'*': {'episodes': 100}" in w for w in said)
    assert out["files"] == [str(tmp_path / "old_digits.py")]  # each warning points at the plugin's own line
    assert out["episodes"] == 100 and out["gamma"] == 0.99 and out["n"] == 2000


@pytest.mark.parametrize("old,name,home", [
    ("arqbench.smoothing", "SmoothingConfig", "arqbench.contract"),
    ("arqbench.smoothing", "certify_many", "arqbench.toolkit"),
    ("arqbench.search", "SearchResult", "arqbench.contract"),
    ("arqbench.certification", "Reference", "arqbench.contract"),
    ("arqbench.interfaces", "Certifier", "arqbench.contract"),
    ("arqbench.config", "Protocol", "arqbench.pipeline.config"),
    ("arqbench.bundled.irs", "IncrementalRS", "arqbench.bundled.certifiers.irs"),
])
def test_every_moved_module_names_the_new_import(old, name, home):
    import importlib

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = getattr(importlib.import_module(old), name)
    assert value is getattr(importlib.import_module(_moved.MOVED[old]), name)
    assert [str(w.message) for w in caught] == [
        f"{old} is deprecated and goes in arqbench {_moved.REMOVED_IN}: write `from {home} import {name}`"]
    assert all(issubclass(w.category, DeprecationWarning) for w in caught)


def test_a_name_the_old_module_never_had_is_an_attribute_error_and_submodules_still_import():
    with pytest.raises(ImportError):
        from arqbench.benchmark import NoSuchThing  # noqa: F401
    from arqbench.search import sensitivity  # a submodule of the package, no warning

    assert sensitivity.__name__ == "arqbench.search.sensitivity"
    assert all(new.startswith("arqbench.") for new in _moved.MOVED.values())


def test_the_toolkits_module_export_of_plugin_api_1_0_still_works_with_a_warning():
    """Plugin API 1.1 exports the sensitivity profile's functions by name; ``toolkit.sensitivity`` (1.0) still
    answers, saying what to import instead."""
    from arqbench import toolkit

    with pytest.warns(_moved.PluginAPIDeprecation, match=r"arqbench\.toolkit\.sensitivity is deprecated \(plugin API "
                      r"1\.1\) and goes in arqbench 0\.4: write `from arqbench\.toolkit import sensitivity_profile, "):
        module = toolkit.sensitivity
    assert module.profile is toolkit.sensitivity_profile and module.Profile is toolkit.SensitivityProfile
    assert "sensitivity" not in toolkit.__all__
