"""`pip install .` beside what people have: the wheel (not only an editable install) carries every plugin,
and installing it into an environment that has torch installs no other torch."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def requirements() -> dict[str, Requirement]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(r).name: Requirement(r) for r in project["dependencies"]}


def test_torch_is_a_range_that_holds_the_installed_versions():
    import torchvision

    needed = requirements()
    for name, module in (("torch", torch), ("torchvision", torchvision)):
        spec = needed[name].specifier
        assert not any(s.operator == "==" for s in spec), f"{name} is pinned: {spec}"
        assert Version(module.__version__.split("+")[0]) in spec, (name, module.__version__, spec)
    assert Version("2.4") in needed["torch"].specifier and Version("2.3.1") not in needed["torch"].specifier


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a copy of the tracked sources (the checkout itself is left untouched)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file() and not name.startswith(("leaderboards/", "tests/")):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
                           capture_output=True, text=True, timeout=600)
    if built.returncode != 0 and "No matching distribution found for setuptools" in built.stderr:
        pytest.skip("no package index reachable to fetch the build backend")
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("arqbench-*.whl")
    return path


def test_the_wheel_carries_the_core_every_plugin_and_the_license(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("arqbench/__main__.py", "arqbench/api.py", "arqbench/bundled/certifiers/rs.py", "arqbench/bundled/searches/arq.py",
                   "arqbench/baselines/haq.py", "arqbench/pipeline/saved.py", "arqbench/quantization/qdq.py"):
        assert module in names, module
    metadata = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "rs = arqbench.bundled.certifiers.rs" in entry_points and "arqbench = arqbench.cli:main" in entry_points
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_installing_next_to_an_existing_torch_installs_no_other_torch(wheel, tmp_path):
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report),
                             str(wheel)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    installs = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert "arqbench" in installs and not installs & {"torch", "torchvision"}, installs
