"""Baseline search methods (uniform, random, HAQ, HAWQ), plugins exactly like a third party's."""
