"""A setting's text (a flag's argument, a sweep file's value) -> its value, or one line naming the flag.

The command line uses these as argparse types; ``arqbench.pipeline.usecases`` uses them on the settings a
library call or a sweep file gives, so each mistake reads the same wherever it was made. ``integer``, ``number``
and ``choice`` word their errors as argparse does its own (``argument --n: invalid int value: 'x'``)."""

import ast

from arqbench.errors import ArqbenchError

HELP = " (see arqbench run --help)"  # what the command line's parser adds to a mistake in a run flag
# which base model a cell of seed s quantizes (``Protocol.base_seeds``): "shared", base model 0 for every seed (one
# network: a user's checkpoint); "per-seed", base model s, trained with seed s, so a table's seeds vary the network
BASE_SEEDS = ("shared", "per-seed")


def floats(flag: str):
    def parse(text: str) -> list[float]:
        try:
            return [float(v) for v in text.split(",") if v.strip()] or _empty(flag)
        except ValueError:
            raise ArqbenchError(f"{flag} expects comma-separated numbers, got '{text}'") from None
    return parse


def ints(flag: str):
    def parse(text: str) -> list[int]:
        try:
            return [int(v) for v in text.split(",") if v.strip()] or _empty(flag)
        except ValueError:
            raise ArqbenchError(f"{flag} expects comma-separated integers, got '{text}'") from None
    return parse


def positive_int(flag: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise ArqbenchError(f"{flag} expects a positive integer, got '{text}'")
        return value
    return parse


def names(flag: str):
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",")]
        if not all(values):
            raise ArqbenchError(f"{flag} expects comma-separated names, got '{text}'")
        return values
    return parse


def _empty(flag):
    raise ArqbenchError(f"{flag} needs at least one value")


def option(text: str) -> tuple[str, str, object]:
    """``NAME.KEY=VALUE`` -> (plugin name, key, value); values are Python literals or plain strings."""
    head, sep, raw = text.partition("=")
    method, dot, key = head.partition(".")
    if not sep or not dot or not method or not key:
        raise ArqbenchError(f"--option expects NAME.KEY=VALUE for a plugin NAME (e.g. haq.warmup=5), got '{text}'")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return method, key, value


def integer(flag: str):
    return _typed(flag, int)


def number(flag: str):
    return _typed(flag, float)


def _typed(flag: str, kind):
    def parse(text: str):
        try:
            return kind(text)
        except ValueError:
            raise ArqbenchError(f"argument {flag}: invalid {kind.__name__} value: {text!r}{HELP}") from None
    return parse


def choice(flag: str, choices: tuple[str, ...]):
    def parse(text: str) -> str:
        if text not in choices:
            raise ArqbenchError(f"argument {flag}: invalid choice: {text!r} (choose from "
                                f"{', '.join(map(repr, choices))}){HELP}")
        return text
    return parse
