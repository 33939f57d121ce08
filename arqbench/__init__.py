"""arqbench: a benchmark harness for robustness-aware mixed-precision quantization."""

__version__ = "0.1.0"
