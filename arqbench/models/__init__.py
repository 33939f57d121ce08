"""The base model of a benchmark: what a benchmark plugin declares (``benchmark``), its data splits (``data``),
input normalisation (``normalize``), checkpoints, noise-augmented training, and finding the float model."""
