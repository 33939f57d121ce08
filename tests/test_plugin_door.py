"""The door for plugin authors (DESIGN §2): first-party plugins import only the contract, the toolkit,
``hookspecs`` and ``errors``; the contract sits at the bottom of the import graph; the toolkit says what each of
its names is."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import arqbench
from arqbench import toolkit

ROOT = Path(__file__).resolve().parents[1]
DOOR = {"arqbench.contract", "arqbench.toolkit", "arqbench.hookspecs", "arqbench.errors"}
PLUGIN_FILES = sorted([*ROOT.joinpath("plugins").rglob("*.py"), *ROOT.joinpath("baselines").rglob("*.py")])


def arqbench_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import of arqbench in ``path``; ``from arqbench import x`` as arqbench.x."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "arqbench"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] == "arqbench":
            if node.module == "arqbench":
                found += [(node.lineno, f"arqbench.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def test_the_check_sees_imports_that_reach_past_the_door(tmp_path):
    code = "import arqbench.files\nfrom arqbench import plugins\nfrom arqbench.smoothing.core import ABSTAIN\n" \
           "from arqbench.toolkit import warn\nfrom .paper import data_hint\n"
    (tmp_path / "probe.py").write_text(code)
    modules = [m for _, m in arqbench_imports(tmp_path / "probe.py")]
    assert [m for m in modules if m not in DOOR] == ["arqbench.files", "arqbench.plugins", "arqbench.smoothing.core"]


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_first_party_plugins_import_only_the_door(path):
    beyond = [f"{path.relative_to(ROOT)}:{line}: {module}" for line, module in arqbench_imports(path)
              if module not in DOOR]
    assert not beyond, "a plugin may import only arqbench.contract, toolkit, hookspecs and errors:\n" + "\n".join(beyond)


def test_importing_the_contract_loads_no_other_arqbench_module():
    """Only the package itself (its __init__ loads the version and the moved-module table, standard library only)."""
    code = "import sys, json, arqbench.contract; print(json.dumps(sorted(m for m in sys.modules if m.startswith('arqbench'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert set(json.loads(out)) <= {"arqbench", "arqbench.contract", "arqbench.version", "arqbench._moved"}
    assert "arqbench.contract" in json.loads(out)


def test_the_contract_imports_only_torch_and_the_standard_library():
    tree = ast.parse((ROOT / "arqbench" / "contract.py").read_text())
    roots = {(n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
             for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
             for a in (n.names if isinstance(n, ast.Import) else [n])}
    assert roots <= set(sys.stdlib_module_names) | {"torch"}, roots


def test_every_toolkit_name_is_there_and_said_in_one_line():
    for name in toolkit.__all__:
        assert hasattr(toolkit, name), name
        lines = [line for line in toolkit.__doc__.splitlines() if f"``{name}``" in line and line.startswith("- ")]
        assert lines, f"toolkit.{name} has no line in the toolkit's docstring"


def test_the_plugin_api_version_is_public_and_recorded_in_results():
    from arqbench.pipeline.results import versions

    assert arqbench.PLUGIN_API == "2.0"
    assert versions(__import__("torch").device("cpu"))["plugin_api"] == arqbench.PLUGIN_API


def test_the_contract_reads_protocols_first_then_values():
    """contract.py is the page a plugin author reads: every Protocol (and the Benchmark base class) comes before
    every value type (dataclass or TypedDict)."""
    tree = ast.parse((ROOT / "arqbench" / "contract.py").read_text())
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]

    def is_kind(node: ast.ClassDef) -> bool:
        return node.name == "Benchmark" or any(ast.unparse(base) == "Protocol" for base in node.bases)

    kinds = [i for i, node in enumerate(classes) if is_kind(node)]
    values = [i for i, node in enumerate(classes) if not is_kind(node)]
    assert kinds and values and max(kinds) < min(values), [c.name for c in classes]
    assert {c.name for c in classes if is_kind(c)} >= {"Quantizer", "Certifier", "Search", "CostModel", "SearchContext"}


def test_the_toolkit_exports_names_not_modules():
    import types

    modules = [name for name in toolkit.__all__ if isinstance(getattr(toolkit, name), types.ModuleType)]
    assert not modules, f"toolkit exports modules {modules}: export the functions a plugin uses, by name"


def test_both_bundled_quantizers_build_on_the_wrapper_the_docs_teach():
    from arqbench.bundled.quantizers.linear_quantizer import FakeQuant
    from arqbench.bundled.quantizers.lsq_quantizer import LSQLayer

    for wrapper in (FakeQuant, LSQLayer):
        assert issubclass(wrapper, toolkit.QuantWrapper) and "forward" not in vars(wrapper), wrapper
