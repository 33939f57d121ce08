"""What a search is told to estimate its cost before any work (``arqbench run --dry-run``).

Costs are counted in noisy forward passes of one input through the benchmark's model (the dry run
multiplies them by the model's MACs and divides by a measured forward throughput). A training step
counts ``TRAIN_COST`` forwards per sample: a forward and a backward pass, about twice a forward's work.
A search whose work is cached and reused by other cells says so with ``Cost``.
"""

from arqbench.contract import TRAIN_COST, Cost, Workload  # noqa: F401 (the core's names for them)
