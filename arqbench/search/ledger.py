"""What a cell's search spent: its own work, the cached work it reused, its waits on other processes.

A cell records its search time in parts (``arqbench.pipeline.cell``; old files: ``arqbench.pipeline.timing``):

- ``search_s``, own work: the search's wall time less its waits;
- ``search_wait_s``: seconds blocked on a lock while another process measured shared work (e.g. a sensitivity
  profile); not search work, so neither own nor reused;
- ``search_reused_s``: cached work the search read instead of computing, each cached item counted once, at the
  seconds it took when it was measured, however often the search read it; an item this cell measured itself
  is in its own time and is not counted again;
- ``search_cost_s = search_s + search_reused_s``, what the search would have cost from a cold cache.

Search methods, and the caches they use, report to the cell's ``Ledger`` (``SearchContext.ledger``; a
certifier gets it as ``Reference.ledger``). A key names one cached item (a cache file, or one entry of it)
and is the same in every process that reads it.
"""

import time
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Ledger:
    reused_items: dict[str, float] = field(default_factory=dict)  # key -> seconds it took when measured
    measured_items: set[str] = field(default_factory=set)  # keys this cell measured itself
    wait_s: float = 0.0

    def reused(self, key: str, seconds: float) -> None:
        """The search read cached item ``key``, which took ``seconds`` to measure; counted once per key."""
        self.reused_items.setdefault(key, float(seconds))

    def measured(self, key: str) -> None:
        """The search measured item ``key`` itself (its time is own work): a later read of it is not reuse."""
        self.measured_items.add(key)

    def waited(self, seconds: float) -> None:
        self.wait_s += seconds

    @contextmanager
    def waiting(self):
        """Counts the time spent in the ``with`` block as a wait (e.g. acquiring another process's lock)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.waited(time.perf_counter() - start)

    @property
    def reused_s(self) -> float:
        return sum(s for key, s in self.reused_items.items() if key not in self.measured_items)
