"""Search machinery shared by search plugins: what a search gets and returns (``context``), HAQ's
bit-allocation environment (``bit_env``) and DDPG agent (``agent``)."""

from arqbench._moved import package_getattr

__getattr__ = package_getattr(__name__)  # the names of the former module arqbench.search say where they went
