"""Cohen et al.'s certification output (``code/certify.py`` of locuslab/smoothing), so their ``analyze.py``
and the plotting scripts built on it read arqbench's certificates unchanged.

A header line, then one tab-separated line per certified image::

    idx	label	predict	radius	correct	time
    0	3	3	0.612	1	0:00:01.734120

``idx`` is the image's index in the test set, ``predict`` -1 where the smoothed classifier abstains (radius
0.0), ``radius`` printed with 3 significant digits (Python's ``{:.3}``), ``correct`` 1 or 0, and ``time`` the
certification wall time as ``str(datetime.timedelta)``.
"""

import datetime
from pathlib import Path
from typing import Iterable

from arqbench.files import write_text_atomic
from arqbench.smoothing.core import Certificate

COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")


def text(certificates: Iterable[Certificate]) -> str:
    lines = ["\t".join(COLUMNS)]
    for c in certificates:
        elapsed = datetime.timedelta(seconds=c.seconds)
        lines.append(f"{c.index}\t{c.label}\t{c.prediction}\t{float(c.radius):.3}\t{int(c.correct)}\t{elapsed}")
    return "\n".join(lines) + "\n"


def write(path: Path, certificates: Iterable[Certificate]) -> None:
    write_text_atomic(Path(path), text(certificates))
