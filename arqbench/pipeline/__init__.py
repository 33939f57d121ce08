"""The run pipeline: protocol settings (``config``), one cell (``protocol``), where cells run (``executors``),
the sweep over cells (``sweep``) and the result store (``results``)."""
