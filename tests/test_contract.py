"""The written plugin contract (arqbench.contract) holds for every first-party plugin, and any plugin's
options travel by name from the command line to the plugin and into the result, with no core change."""

import inspect
import json
import re
import textwrap
import typing
from pathlib import Path

import pytest
from conftest import TINY, run_subprocess

from arqbench import contract, plugins
from arqbench.errors import ArqbenchError

PROTOCOLS = {"quantizer": contract.Quantizer, "certifier": contract.Certifier, "search": contract.Search,
             "cost_model": contract.CostModel, "benchmark": contract.Benchmark}
CORE = Path(plugins.__file__).parent


def first_party():
    for kind, entries in plugins.registries().items():
        for name, entry in entries.items():
            if entry.factory.__module__.startswith(("arqbench.bundled", "arqbench.baselines")):
                yield kind, name


def protocol_methods(protocol) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in vars(protocol).items()
            if inspect.isfunction(member) and not name.startswith("_")}


@pytest.mark.parametrize("kind,name", sorted(first_party()))
def test_every_first_party_plugin_satisfies_its_protocol(kind, name):
    obj = plugins.create(kind, name)
    protocol = PROTOCOLS[kind]
    assert isinstance(obj, protocol), f"{kind} {name} lacks a method of {protocol.__name__}"
    for method, expected in protocol_methods(protocol).items():
        actual = inspect.signature(getattr(obj, method))
        wanted = [p for p in expected.parameters.values() if p.name != "self"]
        have = list(actual.parameters.values())
        assert [p.name for p in have[:len(wanted)]] == [p.name for p in wanted], (kind, name, method)
        assert all(p.default is not p.empty for p in have[len(wanted):]), (kind, name, method)  # extras optional
        for mine, theirs in zip(have, wanted):  # a parameter optional in the contract is optional here too
            assert (theirs.default is theirs.empty) or (mine.default is not mine.empty), (kind, name, method, mine)
    if kind == "benchmark":
        hints = typing.get_type_hints(protocol)
        assert set(hints) <= set(vars(obj)) | set(dir(obj)), (name, set(hints) - set(dir(obj)))


def test_the_core_search_context_provides_every_member_the_contract_declares():
    """``arqbench.search.context.SearchContext`` is what searches get; ``contract.SearchContext`` is what they are
    promised: every declared attribute is a field (or attribute) of the core's, every declared method is there
    with the same parameters."""
    import dataclasses

    from arqbench.search.context import SearchContext as Core

    fields = {f.name for f in dataclasses.fields(Core)}
    attributes = set(typing.get_type_hints(contract.SearchContext)) - set(protocol_methods(contract.SearchContext))
    assert attributes <= fields | set(dir(Core)), attributes - fields - set(dir(Core))
    for name, declared in protocol_methods(contract.SearchContext).items():
        assert callable(getattr(Core, name, None)), name
        assert list(inspect.signature(getattr(Core, name)).parameters) == list(declared.parameters), name
    assert "tied" in fields and "tied" in attributes


def test_quantizers_offer_what_sensitivity_searches_need():
    for name in plugins.names("quantizer"):
        assert isinstance(plugins.create("quantizer", name), contract.WeightQuantizer), name


def test_hookspecs_name_the_protocol_of_each_kind():
    from arqbench import hookspecs

    for kind, protocol in PROTOCOLS.items():
        doc = getattr(hookspecs, f"register_{kind}").__doc__
        assert f"arqbench.contract.{protocol.__name__}" in doc, kind


def test_the_core_names_no_plugin_setting():
    """IRS's n_p and gamma, the RL searches' episodes: options of their plugins, not core settings. The only
    core mention allowed is the alias table of the command line (``--np``, ``--episodes``) and the agent's
    own settings in the search machinery."""
    pattern = re.compile(r"""(["'](n_p|np|gamma|episodes)["']|\.(n_p|np|gamma|episodes)\b)""")  # keys, attributes
    allowed = {CORE / "cli.py", CORE / "pipeline" / "usecases.py", CORE / "search" / "agent.py", CORE / "search" / "bit_env.py",
               CORE / "contract.py"}  # the contract: refuses 0.1's Benchmark(gamma=), defaults["episodes"]
    for path in CORE.rglob("*.py"):
        if path in allowed:
            continue
        code = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())
        code = re.sub(r'"""(.*?)"""', "", code, flags=re.S)  # docstrings may explain
        assert not pattern.search(code), (path, pattern.search(code).group(0))


def test_options_are_checked_against_the_plugin_signature():
    with pytest.raises(ArqbenchError, match=r"certifier 'irs' has no option 'np'; its options: n_p, gamma, alpha_zeta"):
        plugins.create("certifier", "irs", np=0.1)
    with pytest.raises(ArqbenchError, match=r"irs.n_p is a fraction of n"):
        plugins.create("certifier", "irs", n_p=5)
    assert plugins.defaults("certifier", "irs") == {"n_p": 0.1, "gamma": 0.99, "alpha_zeta": 0.001}


def test_list_options_shows_a_plugins_options_with_defaults(cli):
    code, out, err = cli("list", "--options", "irs")
    assert code == 0, err
    assert re.search(r"n_p\s*│\s*float\s*│\s*0.1", out) and "gamma" in out and "alpha_zeta" in out
    code, _, err = cli("list", "--options", "nonesuch")
    assert code == 2 and "no plugin is called 'nonesuch'" in err


def write_out_of_tree_certifier(root: Path) -> None:
    """A third-party certifier with an option of its own: it scales Cohen's radius (a test double)."""
    (root / "my_certifier.py").write_text(textwrap.dedent('''
        from arqbench.hookspecs import hookimpl
        from arqbench.smoothing.core import batched, certify_many, group_size

        class Shrinking:
            def __init__(self, shrink: float = 1.0):
                if not 0 < shrink <= 1:
                    raise ValueError(f"shrink must be in (0, 1], got {shrink}")
                self.shrink = shrink

            def certify(self, model, examples, config, num_classes, reference=None):
                certs = [c for g in batched(examples, group_size(config, config.n0))
                         for c in certify_many(model, g, config, num_classes)]
                for c in certs:
                    c.radius *= self.shrink
                return certs

        @hookimpl
        def register_certifier(register):
            register("shrinking", Shrinking)
    '''))
    dist = root / "my_certifier-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-certifier\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[arqbench]\nmycert = my_certifier\n")


def test_an_out_of_tree_certifier_takes_its_own_option_from_the_command_line(tmp_path):
    write_out_of_tree_certifier(tmp_path)
    env = {"PYTHONPATH": str(tmp_path)}
    out = tmp_path / "results"
    common = ["run", "--methods", "uniform", "--budget", "0.05", "--certifier", "shrinking", *TINY]
    full = run_subprocess(*common, "--out", out / "full", env=env)
    half = run_subprocess(*common, "--option", "shrinking.shrink=0.5", "--out", out / "half", env=env)
    assert full.returncode == 0 and half.returncode == 0, full.stderr + half.stderr
    a = json.loads((out / "full/digits/sigma0.25/budget0.05/uniform-seed0.json").read_text())
    b = json.loads((out / "half/digits/sigma0.25/budget0.05/uniform-seed0.json").read_text())
    assert b["metrics"]["acr"] == pytest.approx(a["metrics"]["acr"] / 2) and a["metrics"]["acr"] > 0
    assert b["plugins"]["certifier"] == {"name": "shrinking", "options": {"shrink": 0.5}}
    assert a["plugins"]["certifier"]["options"] == {"shrink": 1.0}
    bad = run_subprocess(*common, "--option", "shrinking.factor=2", "--out", out / "bad", env=env)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "arqbench: error: certifier 'shrinking' has no option 'factor'; its options: shrink "
        "(see `arqbench list --options shrinking`)"]
    assert not (out / "bad").exists()
