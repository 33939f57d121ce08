"""Former home of the plugin Protocols: they are declared in ``arqbench.contract`` (kept for one minor version)."""

from arqbench.contract import *  # noqa: F401,F403
from arqbench.contract import __all__  # noqa: F401
