"""docs/plugins.md's five examples (quantizer, certifier, search, cost model, benchmark) run as written, installed
out of tree as a third party's package would be: the modules on sys.path beside a ``*.dist-info`` whose
``entry_points.txt`` is what pip writes from the documented pyproject table."""

import json
import re
import tomllib
from pathlib import Path

from conftest import run_subprocess

from arqbench import contract

DOC = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
EXAMPLES = {"my_quantizer": contract.Quantizer, "my_certifier": contract.Certifier, "my_search": contract.Search,
            "my_cost": contract.CostModel, "my_benchmark": contract.Benchmark}


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC, flags=re.S)


def install(root: Path) -> dict:
    """The examples as pip installs the documented pyproject.toml: the modules on sys.path beside the
    ``*.dist-info`` of its distribution, with its entry points. Returns the pyproject."""
    for body in blocks("python"):
        module = re.match(r"# (\w+)\.py\n", body).group(1)
        (root / f"{module}.py").write_text(body)
    pyproject = tomllib.loads(next(b for b in blocks("toml") if b.startswith("# pyproject.toml of your package")))
    project = pyproject["project"]
    dist = root / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    (dist / "entry_points.txt").write_text(
        "[arqbench]\n" + "".join(f"{k} = {v}\n" for k, v in project["entry-points"]["arqbench"].items()))
    return pyproject


def test_the_pyproject_is_complete_and_names_each_example():
    pyproject = tomllib.loads(next(b for b in blocks("toml") if b.startswith("# pyproject.toml of your package")))
    assert pyproject["build-system"]["build-backend"] and pyproject["project"]["version"]
    modules = {re.match(r"# (\w+)\.py\n", body).group(1) for body in blocks("python")}
    assert set(pyproject["tool"]["setuptools"]["py-modules"]) == modules
    assert set(pyproject["project"]["entry-points"]["arqbench"].values()) == modules


def test_the_doc_shows_one_example_of_each_kind_and_they_import_only_the_door():
    modules = [re.match(r"# (\w+)\.py\n", body).group(1) for body in blocks("python")]
    assert sorted(modules) == sorted(EXAMPLES)
    for body in blocks("python"):
        imported = re.findall(r"^from (arqbench[\w.]*) import", body, flags=re.M)
        assert set(imported) <= {"arqbench.contract", "arqbench.toolkit", "arqbench.hookspecs", "arqbench.errors"}


def test_the_five_examples_install_and_run_together(tmp_path):
    project = install(tmp_path)["project"]
    env = {"PYTHONPATH": str(tmp_path)}
    listed = run_subprocess("list", env=env)
    assert listed.returncode == 0 and "warning" not in listed.stderr, listed.stderr
    for name in ("symmetric", "strict-rs", "largest-first", "weight-bits", "tiny-digits"):
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
        ("symmetric", "strict-rs", "weight-bits")
    assert record["search"]["steps"] > 0 and record["metrics"]["acr"] >= 0
    assert record["versions"]["plugin_api"] == "2.0"
    assert {record["versions"]["plugins"][name] for name in project["entry-points"]["arqbench"]} == \
        {project["version"]}  # the distribution's version, though no module is named after it


def test_the_quantizer_example_quantizes_activations_and_reloads(tmp_path, monkeypatch):
    """The contract: a layer computes with its input at ``a_bits``; a saved model reloads bit for bit."""
    import torch
    from torch import nn

    install(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_quantizer

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    policy = {"0": (8, 8), "3": (4, 3)}
    quantized = my_quantizer.Symmetric().quantize(model, policy, [torch.rand(16, 1, 8, 8)]).eval()
    assert isinstance(model[3], nn.Linear)  # the float model is left as it was
    inputs = torch.relu(torch.randn(64, 4 * 6 * 6))
    assert len(quantized[3].quantize_input(inputs).unique()) <= 2 ** 3
    assert len(quantized[3].quantized_weight().unique()) <= 2 ** 4
    rebuilt = my_quantizer.Symmetric().quantize(model, policy, [])
    rebuilt.load_state_dict(quantized.state_dict())
    batch = torch.rand(5, 1, 8, 8)
    assert torch.equal(rebuilt.eval()(batch), quantized(batch))


def test_the_search_example_gives_tied_layers_one_precision(tmp_path, monkeypatch):
    """On digits (net.block2.conv1 and its shortcut tied) the example's policy breaks no rule the core checks."""
    from types import SimpleNamespace

    from arqbench import plugins
    from arqbench.quantization import policy as policies
    from arqbench.quantization.layers import profile_layers

    install(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_search

    digits = plugins.create("benchmark", "digits")
    model = digits.build_model()
    layers = profile_layers(model, digits.input_shape)
    bitops = plugins.create("cost_model", "bitops")
    full = bitops.cost(layers, policies.float_policy(layers))
    ctx = SimpleNamespace(layers=layers, fixed=policies.fixed_layers(layers), tied=digits.tied_layers(model),
                          budget=0.02, cost_fraction=lambda policy: bitops.cost(layers, policy) / full)
    found = my_search.LargestFirst().search(ctx)
    assert ctx.cost_fraction(found.policy) <= ctx.budget
    assert found.policy["net.block2.conv1"][0] < 8  # the tied pair was lowered, as one
    assert policies.protocol_breach(found.policy, ctx.fixed, ctx.tied, False) == ""
