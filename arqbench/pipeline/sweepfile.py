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

The file's settings are checked as the command line's (``arqbench.pipeline.usecases.run_settings``): a flag
given on the command line (or a keyword of ``arqbench.run``) overrides the file's value (``--option``s add to the
file's, the command line's winning per key); an unknown key is one error naming the known ones.

A result's ``run_config`` (``usecases.record``) is a sweep file too: a switch that turns something off is
recorded by what it turns off (``keep-ends = false`` for ``--quantize-ends``, ``save-models = false`` for
``--no-save-models``), and ``config``, the file its values were read from, is ignored (they are all there).
"""

import tomllib
from pathlib import Path

from arqbench.errors import ArqbenchError

SOURCE = "config"  # recorded beside the settings it supplied; a file naming it is read without it


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

