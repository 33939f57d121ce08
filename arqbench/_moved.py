"""Modules that moved, kept importable for one minor version with a DeprecationWarning naming the new import.

One table, ``MOVED`` (old module -> where its contents live now), and one mechanism: an import hook that answers an
old module name with a stand-in whose attributes are looked up in the new module, each lookup warning with the
import to write instead: ``arqbench.contract`` or ``arqbench.toolkit`` when the name is part of the plugin door,
else the internal module it moved to. Old modules that are packages now (``arqbench.search``,
``arqbench.smoothing``) answer their old names through the package's ``__getattr__`` (``package_getattr``).
Standard library only: ``arqbench/__init__`` installs it.
"""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings

REMOVED_IN = "0.4"  # restated in 0.3.0: 0.3 shipped with these still in place (CHANGELOG, plugin API 1.1)
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
DOOR = ("arqbench.contract", "arqbench.toolkit")


class PluginAPIDeprecation(DeprecationWarning):
    """An import of a name that moved; shown by default (plugins are not ``__main__``)."""


def new_import(old: str, name: str) -> tuple[object, str]:
    """(the object ``old.name`` is now, the module to import it from), preferring the plugin door."""
    module = importlib.import_module(MOVED[old])
    if name.startswith("__") or not hasattr(module, name):
        raise AttributeError(f"module '{old}' has no attribute '{name}' (it moved to {MOVED[old]}, which lacks it)")
    for door in DOOR:  # the plugin door's name for it (the contract's SearchContext is the Protocol of the core's)
        if name in importlib.import_module(door).__all__:
            return getattr(module, name), door
    return getattr(module, name), MOVED[old]


def moved_attribute(old: str, name: str, stacklevel: int = 3):
    value, home = new_import(old, name)
    warnings.warn(f"{old} is deprecated and goes in arqbench {REMOVED_IN}: write `from {home} import {name}`",
                  PluginAPIDeprecation, stacklevel=stacklevel)
    return value


def package_getattr(package: str):
    """A package's ``__getattr__`` that answers the names its former module had (never its own submodules)."""
    def __getattr__(name: str):
        if name.startswith("__") or importlib.util.find_spec(f"{package}.{name}") is not None:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        if sys._getframe(1).f_globals.get("__name__") == "importlib._bootstrap":  # ``from package import name``
            return new_import(package, name)[0]  # checks the name exists; the import statement's own lookup warns
        return moved_attribute(package, name)
    return __getattr__


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an import of an old module name (one with no file of its own) with a forwarding stand-in."""

    def find_spec(self, fullname, path=None, target=None):
        return importlib.machinery.ModuleSpec(fullname, self) if fullname in MOVED else None

    def create_module(self, spec):
        module = types.ModuleType(spec.name, f"Moved to {MOVED[spec.name]} (deprecated; goes in {REMOVED_IN}).")
        module.__getattr__ = lambda name: moved_attribute(spec.name, name)
        return module

    def exec_module(self, module):
        pass


def keep_old_imports(table: dict[str, str]) -> None:
    """Answer each old module name of ``table`` (old -> new module) with the deprecated stand-in, as ``MOVED``'s:
    for a plugin package that moved its own modules (the first-party plugins, grouped by kind in 0.2, do)."""
    MOVED.update(table)


def install() -> None:
    """Add the finder after the regular ones (a real module of an old name, a package now, is found first)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
        warnings.filterwarnings("default", category=PluginAPIDeprecation)
