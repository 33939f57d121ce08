"""docs/plugins.md's five examples (quantizer, certifier, search, cost model, benchmark) run as written, installed
out of tree as a third party's package would be: the modules on sys.path beside a ``*.dist-info`` whose
``entry_points.txt`` is what pip writes from the documented pyproject table."""

import json
import re
from pathlib import Path

from conftest import run_subprocess

from arqbench import contract

DOC = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
EXAMPLES = {"my_quantizer": contract.Quantizer, "my_certifier": contract.Certifier, "my_search": contract.Search,
            "my_cost": contract.CostModel, "my_benchmark": contract.Benchmark}


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC, flags=re.S)


def install(root: Path) -> None:
    for body in blocks("python"):
        module = re.match(r"# (\w+)\.py\n", body).group(1)
        (root / f"{module}.py").write_text(body)
    table = next(b for b in blocks("toml") if b.startswith("# in your package's pyproject.toml"))
    dist = root / "my_plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(table.split("\n", 1)[1].replace("project.entry-points.", "").replace('"', ""))


def test_the_doc_shows_one_example_of_each_kind_and_they_import_only_the_door():
    modules = [re.match(r"# (\w+)\.py\n", body).group(1) for body in blocks("python")]
    assert sorted(modules) == sorted(EXAMPLES)
    for body in blocks("python"):
        imported = re.findall(r"^from (arqbench[\w.]*) import", body, flags=re.M)
        assert set(imported) <= {"arqbench.contract", "arqbench.toolkit", "arqbench.hookspecs", "arqbench.errors"}


def test_the_five_examples_install_and_run_together(tmp_path):
    install(tmp_path)
    env = {"PYTHONPATH": str(tmp_path)}
    listed = run_subprocess("list", env=env)
    assert listed.returncode == 0, listed.stderr
    for name in ("weight-only", "strict-rs", "largest-first", "weight-bits", "tiny-digits"):
        assert name in listed.stdout, name
    command = next(b for b in blocks("bash") if b.startswith("arqbench run")).replace("\\\n", " ").split()[1:]
    out = tmp_path / "results"
    tiny = ["--n0", "20", "--n", "200", "--test-images", "8", "--batch-size", "200"]
    result = run_subprocess(*command, *tiny, "--out", out, env=env)
    assert result.returncode == 0, result.stderr
    (path,) = out.glob("tiny-digits/sigma*/budget0.1/largest-first-seed0.json")
    record = json.loads(path.read_text())
    assert record["status"] == "ok", record
    protocol = record["config"]["protocol"]
    assert (protocol["quantizer"], protocol["certifier"], protocol["cost_model"]) == \
        ("weight-only", "strict-rs", "weight-bits")
    assert record["search"]["steps"] > 0 and record["metrics"]["acr"] >= 0
    assert record["versions"]["plugin_api"] == "1.0" and record["versions"]["plugins"]
