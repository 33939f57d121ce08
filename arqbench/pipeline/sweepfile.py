"""Sweep files: every ``arqbench run`` flag from a TOML file (``arqbench run --config sweep.toml``).

A key is a flag's name without its dashes (``sigma``, ``test-images`` or ``test_images``, ``search-activations``);
a list is a comma list; ``true`` sets a switch. Plugin options go in ``[options.NAME]`` tables (what
``--option NAME.KEY=VALUE`` sets)::

    benchmarks = ["digits"]
    methods = ["arq", "haq", "hawq", "uniform"]
    sigma = [0.25, 0.5]
    budget = 0.025
    seed = [0, 1, 2]
    search-activations = true
    out = "paper-results"

    [options.haq]
    warmup = 5

The file stands for flags written before the command line's, so a flag given on the command line overrides
the file's value (``--option``s add to the file's, the command line's winning per key). An unknown key is
one error naming the known ones. The same translation turns ``arqbench.run(**settings)``'s keywords into flags.

A result's ``run_config`` (``resolved``) is a sweep file too: a switch that turns something off is recorded
by what it turns off (``keep-ends = false`` for ``--quantize-ends``, ``save-models = false`` for
``--no-save-models``), and ``config``, the file its values were read from, is ignored (they are all there).
"""

import argparse
import tomllib
from pathlib import Path

from arqbench.errors import ArqbenchError

NOT_IN_FILE = {"config", "help"}  # flags a sweep file cannot set
NOT_RECORDED = {"dry-run"}
SOURCE = "config"  # recorded beside the settings it supplied; a file naming it is read without it


def run_flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The ``run`` subcommand's flags by name without dashes, e.g. ``{"test-images": action}``."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    run = sub.choices["run"]
    return {option[2:]: action for action in run._actions for option in action.option_strings
            if option.startswith("--") and option[2:] not in NOT_IN_FILE}


def to_argv(settings: dict, flags: dict[str, argparse.Action], where: str) -> list[str]:
    """Command-line arguments for ``settings`` (``{flag name: value}``); ``where`` names the source in errors."""
    argv: list[str] = []
    recorded = switched_off(flags)
    for key, value in settings.items():
        name = str(key).replace("_", "-")
        if name in ("option", "options"):
            argv += _options(value, where)
            continue
        if name == SOURCE:
            continue
        if name in recorded and name not in flags:
            if not isinstance(value, bool):
                raise ArqbenchError(f"{where}: '{key}' is a switch; give true or false, got {value!r}")
            argv += [] if value else [recorded[name].option_strings[0]]
            continue
        if name not in flags:
            known = ", ".join(sorted({*flags, *recorded, "options"} - {"option"}))
            raise ArqbenchError(f"{where}: unknown setting '{key}'; known: {known}")
        action, flag = flags[name], f"--{name}"
        if action.nargs == 0:  # a switch
            if not isinstance(value, bool):
                raise ArqbenchError(f"{where}: '{key}' is a switch; give true or false, got {value!r}")
            argv += [flag] if value else []
        elif isinstance(value, (dict, bool)):
            raise ArqbenchError(f"{where}: '{key}' takes a value or a list of values, got {value!r}")
        elif value is not None:
            text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            argv.append(f"{flag}={text}")
    return argv


def switched_off(flags: dict[str, argparse.Action]) -> dict[str, argparse.Action]:
    """The switches that turn something off, by the name ``resolved`` records them under (what they turn
    off: ``keep-ends`` for ``--quantize-ends``); true is the default, false the switch."""
    return {action.dest.replace("_", "-"): action for action in flags.values()
            if isinstance(action, argparse._StoreFalseAction)}


def _options(value, where: str) -> list[str]:
    """``{NAME: {KEY: VALUE}}`` (a TOML table per plugin) or a list of ``"NAME.KEY=VALUE"`` -> --option flags."""
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return [f"--option={v}" for v in value]
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ArqbenchError(f"{where}: options are [options.NAME] tables of KEY = VALUE (or a list of "
                            f"'NAME.KEY=VALUE'), got {value!r}")
    return [f"--option={name}.{key}={item!r}" for name, table in value.items() for key, item in table.items()]


def read(path: Path) -> dict:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ArqbenchError(f"--config {path} does not exist; pass a TOML sweep file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArqbenchError(f"--config {path} cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ArqbenchError(f"--config {path} is not valid TOML ({exc})") from None


def apply(parser: argparse.ArgumentParser, argv: list[str], args: argparse.Namespace) -> argparse.Namespace:
    """``args`` re-parsed with the ``--config`` file's flags placed before the command line's (which win)."""
    path = getattr(args, "config", None)
    if path is None:
        return args
    where = f"--config {path}"
    file_argv = to_argv(read(path), run_flags(parser), where)
    command = argv.index(args.command)
    try:
        parser.parse_args([args.command, *file_argv])  # the file alone: its mistakes named as its own
    except ArqbenchError as exc:
        raise ArqbenchError(f"{where}: {exc}") from None
    return parser.parse_args([*argv[:command + 1], *file_argv, *argv[command + 1:]])


def resolved(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """The run's settings after the file and the command line, as plain values, keyed by flag name (a switch
    that turns something off, by what it turns off: ``save-models``, ``keep-ends``)."""
    out = {}
    for name, action in run_flags(parser).items():
        if name in NOT_RECORDED:
            continue
        value = getattr(args, action.dest, None)
        if name == "option":
            out["options"] = {}
            for plugin, key, item in value or []:
                out["options"].setdefault(plugin, {})[key] = item
            continue
        if isinstance(action, argparse._StoreFalseAction):  # --no-save-models: record save-models = true/false
            name = action.dest.replace("_", "-")
        out[name] = str(value) if isinstance(value, Path) else value
    if getattr(args, "config", None) is not None:
        out[SOURCE] = str(args.config)
    return out
