"""``python -m arqbench``: the ``arqbench`` command."""

import sys

from arqbench.cli import main

sys.exit(main())
