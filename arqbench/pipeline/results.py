"""The result store: one JSON file per cell under ``--out``, written atomically, read back for leaderboards."""

import platform
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy
import torch
from filelock import FileLock, Timeout

from arqbench import __version__
from arqbench.errors import ArqbenchError
from arqbench.files import read_json, write_json_atomic

REFERENCE = "fp32"  # the float model's row, one per (benchmark, sigma, seed)
# Protocol settings added after result files were first written, with the value older files were made under:
# filled in on reading, so older results stay reusable and rank with newer ones made the same way.
ADDED_SETTINGS = {"subset": "random", "precision": "fp32"}


@dataclass(frozen=True)
class Cell:
    benchmark: str
    sigma: float
    budget: float | None  # None for the fp32 row
    method: str
    seed: int

    def path(self, out: Path) -> Path:
        where = Path(out) / self.benchmark / f"sigma{self.sigma:g}"
        if self.budget is not None:
            where = where / f"budget{self.budget:g}"
        return where / f"{self.method}-seed{self.seed}.json"

    def label(self) -> str:
        budget = "" if self.budget is None else f" budget={self.budget:g}"
        return f"{self.benchmark} sigma={self.sigma:g}{budget} {self.method} seed={self.seed}"


def claim(path: Path, wait: bool = False) -> FileLock | None:
    """Claim the cell whose result file is ``path`` for this process: an OS lock (flock) on ``.NAME.lock``
    beside it, which the OS drops when the process dies, so a killed run never leaves a stale claim.

    Returns the held lock (``release()`` it after writing the result), or None if another process
    holds the claim and ``wait`` is False; with ``wait`` it blocks until the claim is free.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path.with_name(f".{path.name}.lock"), timeout=-1 if wait else 0)
    try:
        lock.acquire()
    except Timeout:
        return None
    return lock


def write(path: Path, result: dict) -> None:
    write_json_atomic(path, result)


def read(path: Path) -> dict:
    data = read_json(path, "result file")
    if not isinstance(data, dict) or not {"benchmark", "method", "sigma", "status"} <= set(data):
        raise ArqbenchError(f"result file {path} is not an arqbench result; delete it or move it out of the results dir")
    protocol = (data.get("config") or {}).get("protocol")
    if isinstance(protocol, dict) and "test_images" in protocol:
        for key, value in ADDED_SETTINGS.items():
            protocol.setdefault(key, value)
    return data


def read_all(root: Path) -> list[dict]:
    """Every result under ``root`` (each with its ``path``): the JSON files in the result layout of
    ``Cell.path``, ``.../sigma<s>/[budget<b>/]<method>-seed<n>.json``, at any depth (several runs' folders
    may sit under one root); other files (a leaderboard's exports) are not results. A corrupt result file
    is an error naming it."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ArqbenchError(f"results directory {root} is not a directory; pass the --out of `arqbench run`")
    if not root.is_dir():
        raise ArqbenchError(f"results directory {root} does not exist; run `arqbench run --out {root}` first")
    results = []
    for path in sorted(root.rglob("*.json")):
        if not is_result_path(path):
            continue
        result = read(path)
        result["path"] = str(path)
        results.append(result)
    return results


def is_result_path(path: Path) -> bool:
    parent, grandparent = path.parent.name, path.parent.parent.name
    return "-seed" in path.stem and (parent.startswith("sigma") or
                                     (parent.startswith("budget") and grandparent.startswith("sigma")))


def versions(device: torch.device) -> dict:
    from arqbench.plugins import plugin_versions

    return {
        "arqbench": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "plugins": plugin_versions(),
    }


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
