"""What a benchmark plugin provides: a model, its data, its training recipe and its protocol defaults.

Declared once, in the plugin contract (``arqbench.contract.Benchmark``, ``TrainRecipe``, ``Splits``); the core
takes the names from here."""

from arqbench.contract import Benchmark, Splits, TrainRecipe

__all__ = ["Benchmark", "Splits", "TrainRecipe"]
