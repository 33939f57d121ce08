"""arqbench's version and its plugin API's, at the bottom of the import graph (standard library only).

``PLUGIN_API`` versions the door plugins use (``arqbench.contract``, ``arqbench.toolkit``, ``arqbench.hookspecs``,
``arqbench.errors``): a change to them bumps it (minor: additions and deprecations, old names still working with a
DeprecationWarning; major: removals). Every result records it beside the plugins' versions."""

__version__ = "0.4.0.dev0"
PLUGIN_API = "2.0"  # removed 0.1's moved modules and settings (arqbench._moved); 0.5 removes its deprecations
