"""Randomized smoothing: sampling and Cohen et al.'s CERTIFY (``core``), certifying a data subset with a
plugin certifier (``certification``), the protocol's numbers (``metrics``) and their intervals (``intervals``)."""
