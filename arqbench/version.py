"""arqbench's version and its plugin API's, at the bottom of the import graph (standard library only).

``PLUGIN_API`` versions the door plugins use (``arqbench.contract``, ``arqbench.toolkit``, ``arqbench.hookspecs``,
``arqbench.errors``): a change to them bumps it (minor: additions and deprecations, old names still working with a
DeprecationWarning; major: removals). Every result records it beside the plugins' versions."""

__version__ = "0.4.0.dev0"  # 0.4.0 removes the shims _moved.REMOVED_IN names
PLUGIN_API = "1.1"
