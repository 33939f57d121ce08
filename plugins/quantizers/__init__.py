"""Quantizer plugins: a bit policy applied to a model as fake-quantized layers that still train (linear, lsq)."""
