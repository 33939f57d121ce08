"""Search machinery shared by search plugins: what a search gets and returns (``context``), HAQ's
bit-allocation environment (``bit_env``) and DDPG agent (``agent``)."""
