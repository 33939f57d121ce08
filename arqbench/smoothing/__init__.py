"""Randomized smoothing: sampling and Cohen et al.'s CERTIFY (``core``), certifying a data subset with a
plugin certifier (``certification``), the protocol's numbers (``metrics``) and their intervals (``intervals``)."""

from arqbench._moved import package_getattr

__getattr__ = package_getattr(__name__)  # the names of the former module arqbench.smoothing say where they went
