"""The one PluginManager: entry points in group ``arqbench``, first-party plugins included.

Set ``ARQBENCH_PLUGINS`` to a comma-separated list of entry-point names to load only
those (an empty value loads none); unset, every installed plugin loads.
"""

import importlib.metadata
import inspect
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
    default: bool | str = False  # True: the kind's default; a string: the default for that use (``default``)


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

            def register(name, factory, default=False, _plugin=plugin_name, _kind=kind, _entries=entries):
                if name in _entries:
                    raise ArqbenchError(
                        f"{_kind} '{name}' is registered by both plugin '{_entries[name].plugin}' "
                        f"and plugin '{_plugin}'; uninstall one or exclude it with ARQBENCH_PLUGINS"
                    )
                if not isinstance(default, (bool, str)):
                    raise ArqbenchError(f"plugin '{_plugin}' registered {_kind} '{name}' with default={default!r}; "
                                        f"give True, False or the name of a use")
                other = next((e for e in _entries.values() if default and e.default == default), None)
                if other is not None:
                    raise ArqbenchError(
                        f"{_kind} '{name}' (plugin '{_plugin}') and {_kind} '{other.name}' (plugin '{other.plugin}') "
                        f"are both registered as the default{_use(default)}; exclude one with ARQBENCH_PLUGINS"
                    )
                _entries[name] = Entry(_kind, name, factory, _plugin, default)

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


def default(kind: str, use: str | None = None) -> str:
    """The name of the plugin of ``kind`` registered with ``default=True``: what a run uses when none is named.
    With ``use``, the one registered with ``default=use`` (e.g. the certifier that measures sensitivity
    profiles, ``"profile"``), else the kind's default."""
    entries = registries()[kind].values()
    for wanted in ([use] if use else []) + [True]:
        for entry in entries:
            if entry.default == wanted:
                return entry.name
    raise ArqbenchError(f"no installed plugin is the default {kind.replace('_', ' ')}{_use(use)}; name one (see "
                        f"`arqbench list`), or load arqbench's bundled plugins (ARQBENCH_PLUGINS leaves them out)")


def _use(use: bool | str | None) -> str:
    return f" for {use}" if isinstance(use, str) else ""


def get(kind: str, name: str) -> Entry:
    entries = registries()[kind]
    if name not in entries:
        available = ", ".join(sorted(entries)) or "none"
        raise ArqbenchError(
            f"unknown {kind.replace('_', ' ')} '{name}'; available: {available} (see `arqbench list`)"
        )
    return entries[name]


def option_signature(kind: str, name: str) -> dict[str, inspect.Parameter]:
    """The options a plugin takes: the keyword parameters of its factory (for a class, of ``__init__``)."""
    factory = get(kind, name).factory
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C factory: takes no options we can name
        return {}
    return {p.name: p for p in parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}


def defaults(kind: str, name: str) -> dict[str, Any]:
    """Every option of a plugin with its default (None where it has none)."""
    return {key: None if p.default is p.empty else p.default for key, p in option_signature(kind, name).items()}


def resolve_options(kind: str, name: str, options: dict | None = None, shared: dict | None = None) -> dict:
    """The options to build plugin ``name`` with: ``shared`` options (set for every plugin, e.g. by an alias
    flag) that it accepts, overridden by its own. An own option it does not take is one clear error."""
    accepted = option_signature(kind, name)
    options = dict(options or {})
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        valid = ", ".join(accepted) or "none"
        raise ArqbenchError(
            f"{kind.replace('_', ' ')} '{name}' has no option {', '.join(repr(k) for k in unknown)}; its options: "
            f"{valid} (see `arqbench list --options {name}`)"
        )
    return {**{k: v for k, v in (shared or {}).items() if k in accepted}, **options}


def create(kind: str, name: str, **options: Any) -> Any:
    """Build the named plugin object with ``options`` checked against its factory's signature; a factory
    that raises on a bad value becomes one clear error line."""
    entry = get(kind, name)
    options = resolve_options(kind, name, options)
    try:
        return entry.factory(**options)
    except ArqbenchError:
        raise
    except (TypeError, ValueError) as exc:
        raise ArqbenchError(f"{kind.replace('_', ' ')} '{name}' (plugin '{entry.plugin}') rejected options "
                            f"{options}: {exc}") from exc


def kinds_of(name: str) -> list[str]:
    """The kinds under which ``name`` is registered (a name is unique per kind, not across kinds)."""
    return [kind for kind, entries in registries().items() if name in entries]


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
