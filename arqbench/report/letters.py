"""Compact letter display: rows that share a letter do not differ significantly.

The convention of agronomy tables and R's ``multcomp::cld`` / ``multcompView``, by Piepho's (2004)
insert-and-absorb algorithm (H.-P. Piepho, "An algorithm for a letter-based representation of
all-pairwise comparisons", J. Comput. Graph. Stat. 13(2):456-466).
"""

from collections.abc import Iterable
from string import ascii_lowercase


def compact_letters(items: list[str], different: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Each item -> its letters, such that two items share a letter exactly when they are not ``different``.

    Insert and absorb: start with one letter (a column) held by every item. For each significantly
    different pair (i, j), every column holding both is replaced by two copies, one without i and one
    without j (insert); then any column whose items all hold another column is dropped (absorb), which
    also removes duplicates. Columns are lettered in the order of the items: the column of the first item
    gets 'a' (ties broken by the next items it holds), so with items listed best first, the best gets 'a'.
    An item in no significant pair holds every letter.
    """
    position = {item: k for k, item in enumerate(items)}
    columns = [frozenset(items)] if items else []
    for i, j in different:
        split = [c for c in columns if i in c and j in c]
        columns = [c for c in columns if c not in split] + [c - {i} for c in split] + [c - {j} for c in split]
        columns = [c for k, c in enumerate(columns)
                   if not any(c < d or (c == d and m < k) for m, d in enumerate(columns))]
    columns.sort(key=lambda c: sorted(position[x] for x in c))
    return {item: "".join(_letter(k) for k, c in enumerate(columns) if item in c) for item in items}


def _letter(k: int) -> str:
    return ascii_lowercase[k % 26] + (str(k // 26) if k >= 26 else "")
