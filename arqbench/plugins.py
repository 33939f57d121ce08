"""The one PluginManager: entry points in group ``arqbench``, first-party plugins included.

Set ``ARQBENCH_PLUGINS`` to a comma-separated list of entry-point names to load only those (an empty value
loads none), or of ``-name``s to load every installed plugin but those; unset, every installed plugin loads.

What comes through the door is checked at load (DESIGN §3): a hook arqbench does not know, a plugin that
registers nothing, a name registered by two plugins and two defaults of one kind are one warning line each
(``problems()``, printed once per process), never an error that stops every command; a clashing name alone is
unusable, and of two defaults neither is one.
"""

import difflib
import importlib.metadata
import inspect
import os
from dataclasses import dataclass, replace
from typing import Any, Callable

import pluggy

from arqbench import hookspecs
from arqbench.errors import ArqbenchError

GROUP = "arqbench"
KINDS = ("quantizer", "certifier", "search", "cost_model", "benchmark")
HOOKS = tuple(f"register_{kind}" for kind in KINDS)

pm = pluggy.PluginManager(GROUP)
pm.add_hookspecs(hookspecs)

_loaded = False
_registries: dict[str, dict[str, "Entry"]] | None = None
_clashes: dict[tuple[str, str], list[str]] = {}  # (kind, name) -> the plugins that registered it
_default_clashes: dict[tuple[str, bool | str], str] = {}  # (kind, use) with two defaults -> the message
_problems: list[str] = []  # the load's warnings, one line each
_left_out: list[str] = []  # entry points pluggy refused to register, one line each
_dists: dict[str, importlib.metadata.Distribution] = {}  # entry-point name -> the distribution providing it


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    default: bool | str = False  # True: the kind's default; a string: the default for that use (``default``)


def _selection() -> tuple[set[str] | None, set[str]]:
    """``ARQBENCH_PLUGINS`` read: (the entry points to load, None for all; those to leave out)."""
    value = os.environ.get("ARQBENCH_PLUGINS")
    if value is None:
        return None, set()
    named = [name.strip() for name in value.split(",") if name.strip()]
    excluded = {name[1:].strip() for name in named if name.startswith("-")}
    wanted = {name for name in named if not name.startswith("-")}
    return (None if excluded and not wanted else wanted), excluded


def load_plugins() -> None:
    """Import and register every (selected) entry point of group ``arqbench``, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    wanted, excluded = _selection()
    for ep in importlib.metadata.entry_points(group=GROUP):
        if (wanted is not None and ep.name not in wanted) or ep.name in excluded:
            continue
        if pm.has_plugin(ep.name):
            continue
        try:
            module = ep.load()
        except Exception as exc:  # a broken third-party plugin must not take the CLI down with a traceback
            raise ArqbenchError(
                f"plugin '{ep.name}' ({ep.value}) failed to import: {type(exc).__name__}: {exc}; "
                f"fix or uninstall it, or leave it out with ARQBENCH_PLUGINS=-{ep.name}"
            ) from exc
        try:
            pm.register(module, name=ep.name)
        except pluggy.PluginValidationError as exc:  # a hook whose arguments are not the hookspec's
            said = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            _left_out.append(f"plugin '{ep.name}' is left out: {said} (a hook takes one argument, register)")
            continue
        if ep.dist is not None:
            _dists[ep.name] = ep.dist


def _unknown_hooks() -> dict[str, list[str]]:
    """What ``pm.check_pending()`` refuses (a hookimpl with no hookspec: a misspelt hook), as one warning line
    per hook, by plugin, naming the hook it was probably meant to be."""
    lines: dict[str, list[str]] = {}
    try:
        pm.check_pending()
        return lines
    except pluggy.PluginValidationError:
        pass
    for name, caller in vars(pm.hook).items():
        if name.startswith("_") or caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if impl.optionalhook:
                continue
            guess = difflib.get_close_matches(name, HOOKS, n=1)
            meant = f"did you mean {guess[0]}? " if guess else ""
            lines.setdefault(impl.plugin_name, []).append(
                f"plugin '{impl.plugin_name}' implements hook {name}, which arqbench does not know, so it is never "
                f"called: {meant}(hooks: {', '.join(HOOKS)})")
    return lines


def _registers_nothing(plugin_name: str) -> str:
    """The warning for a plugin that registered nothing, with the likely reason: a hook without ``@hookimpl``."""
    plugin = pm.get_plugin(plugin_name)
    undecorated = [hook for hook in HOOKS if callable(getattr(plugin, hook, None))
                   and not hasattr(getattr(plugin, hook), f"{GROUP}_impl")]
    if undecorated:
        why = (f"its {', '.join(undecorated)} has no @hookimpl (from arqbench.hookspecs import hookimpl, then "
               f"@hookimpl above the def)")
    else:
        why = f"none of its hooks called register(name, factory) (hooks: {', '.join(HOOKS)})"
    return f"plugin '{plugin_name}' registers nothing: {why}"


def problems() -> list[str]:
    """The load's warnings, one line each: plugins left out (a hook pluggy refused), unknown hooks, plugins that
    register nothing, name clashes, two defaults of a kind."""
    registries()
    return list(_problems)


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
    """Every usable registered name of every kind: ``{kind: {name: Entry}}`` (a clashing name is left out)."""
    global _registries
    load_plugins()
    if _registries is not None:
        return _registries
    result: dict[str, dict[str, Entry]] = {}
    _clashes.clear()
    _default_clashes.clear()
    registering: set[str] = set()
    for kind in KINDS:
        entries: dict[str, Entry] = {}
        caller = getattr(pm.hook, f"register_{kind}")
        for impl in reversed(caller.get_hookimpls()):  # registration order
            plugin_name = impl.plugin_name

            def register(name, factory, default=False, _plugin=plugin_name, _kind=kind, _entries=entries):
                registering.add(_plugin)
                if (_kind, name) in _clashes:
                    _clashes[_kind, name].append(_plugin)
                    return
                if name in _entries:
                    _clashes[_kind, name] = [_entries.pop(name).plugin, _plugin]
                    return
                if not isinstance(default, (bool, str)):
                    raise ArqbenchError(f"plugin '{_plugin}' registered {_kind} '{name}' with default={default!r}; "
                                        f"give True, False or the name of a use")
                other = next((e for e in _entries.values() if default and e.default == default), None)
                if other is not None:  # two defaults: neither is, and a run must name one
                    (a, p), (b, q) = sorted([(other.name, other.plugin), (name, _plugin)], key=lambda e: e[1])
                    what = _kind.replace('_', ' ')
                    _default_clashes[_kind, default] = (
                        f"{what} '{a}' (plugin '{p}') and {what} '{b}' (plugin '{q}') are both registered as the "
                        f"default{_use(default)}, so neither is; name one (see `arqbench list`) or leave one plugin "
                        f"out (ARQBENCH_PLUGINS=-{p} or ARQBENCH_PLUGINS=-{q})")
                    _entries[other.name] = replace(other, default=False)
                if (_kind, default) in _default_clashes:
                    default = False
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
    unknown = _unknown_hooks()
    _problems[:] = _left_out + [line for lines in unknown.values() for line in lines]
    _problems.extend(_registers_nothing(name) for name, _ in pm.list_name_plugin()
                     if name not in registering and name not in unknown)
    _problems.extend(_clash_message(kind, name) for kind, name in _clashes)
    _problems.extend(_default_clashes.values())
    _registries = result
    _warn(_problems)
    return result


def _warn(lines: list[str]) -> None:
    from arqbench.console import warn

    for line in lines:
        warn(line)


def clashes() -> dict[tuple[str, str], list[str]]:
    """Names registered by more than one plugin, ``{(kind, name): [plugin, ...]}``: unusable until one is left out."""
    registries()
    return {key: sorted(owners) for key, owners in _clashes.items()}


def _clash_message(kind: str, name: str) -> str:
    owners = sorted(_clashes[kind, name])
    both = " and ".join(f"plugin '{owner}'" for owner in owners)
    choices = " or ".join(f"ARQBENCH_PLUGINS=-{owner}" for owner in owners)
    return (f"{kind.replace('_', ' ')} '{name}' is registered by both {both}, so it is unusable; pick one by "
            f"leaving the other out ({choices}) or uninstall one")


def names(kind: str) -> list[str]:
    return sorted(registries()[kind])


def default(kind: str, use: str | None = None) -> str:
    """The name of the plugin of ``kind`` registered with ``default=True``: what a run uses when none is named.
    With ``use``, the one registered with ``default=use`` (e.g. the certifier that measures sensitivity
    profiles, ``"profile"``), else the kind's default."""
    entries = registries()[kind].values()
    for wanted in ([use] if use else []) + [True]:
        if (kind, wanted) in _default_clashes:
            raise ArqbenchError(_default_clashes[kind, wanted])
        for entry in entries:
            if entry.default == wanted:
                return entry.name
    raise ArqbenchError(f"no installed plugin is the default {kind.replace('_', ' ')}{_use(use)}; name one (see "
                        f"`arqbench list`), or load arqbench's bundled plugins (ARQBENCH_PLUGINS leaves them out)")


def _use(use: bool | str | None) -> str:
    return f" for {use}" if isinstance(use, str) else ""


def get(kind: str, name: str) -> Entry:
    entries = registries()[kind]
    if (kind, name) in _clashes:
        raise ArqbenchError(_clash_message(kind, name))
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
        what = f"rejected options {options}" if options else "could not be built with its default options"
        said = str(exc) or f"{type(exc).__name__} (with no message)"
        raise ArqbenchError(f"{kind.replace('_', ' ')} '{name}' (plugin '{entry.plugin}') {what}: {said}") from exc


def kinds_of(name: str) -> list[str]:
    """The kinds under which ``name`` is registered (a name is unique per kind, not across kinds)."""
    return [kind for kind, entries in registries().items() if name in entries]


def plugin_versions() -> dict[str, str]:
    """Plugin name -> the version of the distribution that provides its entry point (for one registered
    directly, the distribution of its top-level module), for the provenance of every result."""
    load_plugins()
    return {name: _dist_version(name, plugin) for name, plugin in pm.list_name_plugin()}


def _dist_version(name: str, plugin: object) -> str:
    if name in _dists:
        return _dists[name].version
    top = getattr(plugin, "__name__", "").split(".")[0]
    try:
        return importlib.metadata.version(top)
    except (importlib.metadata.PackageNotFoundError, ValueError):  # ValueError: no module name (an object)
        return "unknown"
