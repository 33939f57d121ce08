"""Where moved modules went: an import of an old module name fails with one line naming the import to write.

``MOVED`` (old module -> where its contents live now) is the directions. The old names kept working, with a
DeprecationWarning, until plugin API 2.0 (arqbench 0.4) removed them; now an import hook answers an old name with
an ``ImportError`` naming ``arqbench.contract`` or ``arqbench.toolkit`` for names in the plugin door, else the
module it moved to. Old modules that are packages now (``arqbench.search``, ``arqbench.smoothing``) answer their
former names the same way (``package_getattr``). Also the plugin API's deprecation warning and when what it
deprecates goes (``REMOVED_IN``). Standard library only: ``arqbench/__init__`` installs it.
"""

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

REMOVED = "0.4"  # the version that removed MOVED's old names (promised for 0.3, restated in 0.3.0)
REMOVED_IN = "0.5"  # what the plugin API deprecates now (1.1's and 2.0's deprecations) goes in this version
MOVED = {
    # the flat core before it was grouped into subpackages (commit 5a2e5b0)
    "arqbench.base_model": "arqbench.models.base_model",
    "arqbench.benchmark": "arqbench.models.benchmark",
    "arqbench.checkpoints": "arqbench.models.checkpoints",
    "arqbench.data": "arqbench.models.data",
    "arqbench.normalize": "arqbench.models.normalize",
    "arqbench.training": "arqbench.models.training",
    "arqbench.config": "arqbench.pipeline.config",
    "arqbench.executors": "arqbench.pipeline.executors",
    "arqbench.protocol": "arqbench.pipeline.cell",
    "arqbench.pipeline.protocol": "arqbench.pipeline.cell",
    "arqbench.results": "arqbench.pipeline.results",
    "arqbench.sweep": "arqbench.pipeline.sweep",
    "arqbench.profile": "arqbench.quantization.layers",
    "arqbench.policy": "arqbench.quantization.policy",
    "arqbench.leaderboard": "arqbench.report.leaderboard",
    "arqbench.pareto": "arqbench.report.pareto",
    "arqbench.rl_search": "arqbench.search.agent",
    "arqbench.bit_env": "arqbench.search.bit_env",
    "arqbench.certification": "arqbench.smoothing.certification",
    "arqbench.metrics": "arqbench.smoothing.metrics",
    "arqbench.search": "arqbench.search.context",  # now a package: see package_getattr
    "arqbench.smoothing": "arqbench.smoothing.core",  # now a package: see package_getattr
    # the Protocols' former module (0.1)
    "arqbench.interfaces": "arqbench.contract",
}
CORE = frozenset(MOVED)  # the core's; a plugin package adds its own (moved_modules), which the door never holds
DOOR = ("arqbench.contract", "arqbench.toolkit")


class PluginAPIDeprecation(DeprecationWarning):
    """A plugin API name that still works and goes in ``REMOVED_IN``; shown by default (plugins are not
    ``__main__``)."""


def _door(old: str, module) -> dict[str, list[str]]:
    """The plugin API's names ``module`` (where ``old`` moved) holds, by door; none for a plugin package's module."""
    doors = [d for d in DOOR if old in CORE and d != module.__name__]
    return {d: [n for n in importlib.import_module(d).__all__ if hasattr(module, n)] for d in doors}


def directions(old: str, name: str | None = None) -> str | None:
    """The one line an import of the old module ``old`` (or of ``name`` from it) fails with: what to write
    instead. None when the module ``old`` moved to has no ``name``."""
    new = MOVED[old]
    module = importlib.import_module(new)
    said = f"moved to {new}, and its old name was removed in arqbench {REMOVED}: write"
    if name is None:
        door = [f"`from {d} import {', '.join(names)}`" for d, names in _door(old, module).items() if names]
        rest = f"`from {new} import ...`"
        write = f"{' or '.join(door)} (the plugin API; the rest: {rest})" if door else rest
        return f"{old} {said} {write}"
    if name.startswith("__") or not hasattr(module, name):
        return None
    home = next((d for d, names in _door(old, module).items() if name in names), new)
    return f"{old}.{name} {said} `from {home} import {name}`"


def package_getattr(package: str):
    """A package's ``__getattr__``: an AttributeError naming the import to write for a name its former module had."""
    def __getattr__(name: str):
        submodule = importlib.machinery.PathFinder.find_spec(f"{package}.{name}", sys.modules[package].__path__)
        said = None if submodule is not None else directions(package, name)  # never import a submodule early
        raise AttributeError(said or f"module '{package}' has no attribute '{name}'")
    return __getattr__


class _MovedFinder(importlib.abc.MetaPathFinder):
    """Answers an import of an old module name (one with no file of its own), or of a former name from an old
    module that is a package now (``from arqbench.search import SearchResult`` asks for it after the package's
    ``__getattr__``), with the ImportError of ``directions``."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        said = directions(fullname) if fullname in MOVED else directions(package, name) if package in MOVED else None
        if said:
            raise ImportError(said, name=fullname)
        return None


def moved_modules(table: dict[str, str]) -> None:
    """Add ``table`` (old -> new module) to ``MOVED``: an import of an old name fails with the new import."""
    MOVED.update(table)


def install() -> None:
    """Add the finder after the regular ones (a real module of an old name, a package now, is found first)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
        warnings.filterwarnings("default", category=PluginAPIDeprecation)
