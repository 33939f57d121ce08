"""Certifier plugins: randomized smoothing (rs) and incremental randomized smoothing (irs)."""
