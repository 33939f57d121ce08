"""The run pipeline: protocol settings (``config``), what cells share (``prepare``), one cell (``cell``), where
cells run (``executors``), the sweep over cells (``sweep``), the result store (``results``), saved models
(``saved``), sweep files (``sweepfile``) and the dry run's estimate (``dryrun``)."""
