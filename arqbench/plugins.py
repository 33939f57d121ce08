"""The one PluginManager: entry points in group ``arqbench``, first-party plugins included.

Set ``ARQBENCH_PLUGINS`` to a comma-separated list of entry-point names to load only
those (an empty value loads none); unset, every installed plugin loads.
"""

import importlib.metadata
import os
from dataclasses import dataclass
from typing import Any, Callable

import pluggy

from arqbench import hookspecs
from arqbench.errors import ArqbenchError

GROUP = "arqbench"
KINDS = ("quantizer", "certifier", "search", "cost_model", "benchmark")

pm = pluggy.PluginManager(GROUP)
pm.add_hookspecs(hookspecs)

_loaded = False
_registries: dict[str, dict[str, "Entry"]] | None = None


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str


def _wanted() -> set[str] | None:
    value = os.environ.get("ARQBENCH_PLUGINS")
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def load_plugins() -> None:
    """Import and register every (selected) entry point of group ``arqbench``, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    wanted = _wanted()
    for ep in importlib.metadata.entry_points(group=GROUP):
        if wanted is not None and ep.name not in wanted:
            continue
        if pm.has_plugin(ep.name):
            continue
        try:
            module = ep.load()
        except Exception as exc:  # a broken third-party plugin must not take the CLI down with a traceback
            raise ArqbenchError(
                f"plugin '{ep.name}' ({ep.value}) failed to import: {type(exc).__name__}: {exc}; "
                f"fix or uninstall it, or leave it out with ARQBENCH_PLUGINS"
            ) from exc
        pm.register(module, name=ep.name)


def register_plugin(plugin: object, name: str) -> None:
    """Register a plugin object (a module or class with hookimpls) directly, e.g. from a test."""
    global _registries
    pm.register(plugin, name=name)
    _registries = None


def unregister_plugin(name: str) -> None:
    global _registries
    pm.unregister(name=name)
    _registries = None


def registries() -> dict[str, dict[str, Entry]]:
    """Every registered name of every kind: ``{kind: {name: Entry}}``."""
    global _registries
    load_plugins()
    if _registries is not None:
        return _registries
    result: dict[str, dict[str, Entry]] = {}
    for kind in KINDS:
        entries: dict[str, Entry] = {}
        caller = getattr(pm.hook, f"register_{kind}")
        for impl in reversed(caller.get_hookimpls()):  # registration order
            plugin_name = impl.plugin_name

            def register(name, factory, _plugin=plugin_name, _kind=kind, _entries=entries):
                if name in _entries:
                    raise ArqbenchError(
                        f"{_kind} '{name}' is registered by both plugin '{_entries[name].plugin}' "
                        f"and plugin '{_plugin}'; uninstall one or exclude it with ARQBENCH_PLUGINS"
                    )
                _entries[name] = Entry(_kind, name, factory, _plugin)

            try:
                impl.function(register=register)
            except ArqbenchError:
                raise
            except Exception as exc:
                raise ArqbenchError(
                    f"plugin '{plugin_name}' crashed in register_{kind}: {type(exc).__name__}: {exc}"
                ) from exc
        result[kind] = entries
    _registries = result
    return result


def names(kind: str) -> list[str]:
    return sorted(registries()[kind])


def get(kind: str, name: str) -> Entry:
    entries = registries()[kind]
    if name not in entries:
        available = ", ".join(sorted(entries)) or "none"
        raise ArqbenchError(
            f"unknown {kind.replace('_', ' ')} '{name}'; available: {available} (see `arqbench list`)"
        )
    return entries[name]


def create(kind: str, name: str, **options: Any) -> Any:
    """Build the named plugin object; a factory that raises becomes one clear error line."""
    entry = get(kind, name)
    try:
        return entry.factory(**options)
    except ArqbenchError:
        raise
    except TypeError as exc:
        raise ArqbenchError(f"{kind} '{name}' (plugin '{entry.plugin}') rejected options {options}: {exc}") from exc


def plugin_versions() -> dict[str, str]:
    """Plugin name -> distribution version, for the provenance of every result."""
    load_plugins()
    return {name: _dist_version(plugin) for name, plugin in pm.list_name_plugin()}


def _dist_version(plugin: object) -> str:
    module = getattr(plugin, "__name__", "")
    top = module.split(".")[0]
    try:
        return importlib.metadata.version(top)
    except (importlib.metadata.PackageNotFoundError, ValueError):  # ValueError: no module name (an object)
        return "unknown"
