"""The result store: one JSON file per cell under ``--out``, written atomically, read back for leaderboards."""

import platform
import sys
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy
import torch
from filelock import FileLock, Timeout

from arqbench.runtime import cpu_name
from arqbench.version import PLUGIN_API, __version__
from arqbench.errors import ArqbenchError
from arqbench.files import check_json, read_json, write_text_atomic
from arqbench.models.finetune_recipe import DEFAULT as DEFAULT_FINETUNE_RECIPE
from arqbench.pipeline import history
from arqbench.pipeline.config import Protocol

REFERENCE = "fp32"  # the float model's row, one per (benchmark, sigma, seed)
# Protocol settings added after result files were first written, with the value older files were made under:
# filled in on reading, so older results stay reusable and rank with newer ones made the same way.
ADDED_SETTINGS = {"subset": "random", "precision": "fp32", "base_seeds": "shared"}
ADDED_QUANTIZED_SETTINGS = {"finetune_recipe": DEFAULT_FINETUNE_RECIPE}  # the same, for quantized cells only


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
    """The result file, atomically; its search history compacted (``arqbench.pipeline.history``)."""
    write_text_atomic(path, history.dumps(result))


IDENTITY = {"benchmark", "method", "sigma", "status"}  # the keys that make a JSON file a result record
NUMBER, INTEGER = {"type": "number"}, {"type": "integer"}
OLD_COSTS = ["bitops", "bitops_fraction", "size_bits", "size_fraction"]
JSON_TYPE = {int: "integer", float: "number", str: "string", bool: "boolean"}


def _schema() -> dict:
    """What readers of a result record (reuse, ``certify --policy``, leaderboards) rely on, as a JSON Schema;
    other keys are free. A protocol setting has its ``Protocol`` field's type."""
    settings = {f.name: {"type": JSON_TYPE[f.type]} for f in fields(Protocol) if f.type in JSON_TYPE}
    settings["options"] = {"type": "object", "additionalProperties": {"type": "object"}}
    return {
        "type": "object",
        "required": ["benchmark", "method", "sigma", "status", "seed", "config"],
        "properties": {
            "benchmark": {"type": "string"}, "method": {"type": "string"},
            "sigma": {"type": "number", "exclusiveMinimum": 0}, "budget": {"type": ["number", "null"]},
            "seed": {"type": "integer"}, "status": {"enum": ["ok", "failed"]}, "error": {"type": ["string", "null"]},
            "config": {"type": "object", "required": ["protocol"],
                       "properties": {"cell": {"type": "object"}, "protocol": {"type": "object", "properties": settings}}},
            "base_model": {"type": ["object", "null"], "properties": {"fingerprint": {"type": ["string", "null"]}}},
            "versions": {"type": ["object", "null"]}, "command": {"type": ["string", "array", "null"]},
            "timing": {"type": ["object", "null"], "additionalProperties": {"type": ["number", "null"]}},
        },
        "if": {"properties": {"status": {"const": "ok"}}},
        "then": {
            "required": ["metrics", "cost"],
            "properties": {
                "policy": {"type": ["object", "null"], "additionalProperties": {
                    "type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}},
                "metrics": {"type": "object", "required": ["clean_acc", "smoothed_acc", "acr", "abstain_rate",
                                                           "certified_acc"],
                            "properties": {"clean_acc": NUMBER, "smoothed_acc": NUMBER, "acr": NUMBER,
                                           "abstain_rate": NUMBER, "certified_acc": {
                                               "type": "object", "additionalProperties": NUMBER,
                                               "propertyNames": {"pattern": r"^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$"}}}},
                "cost": {"type": "object", "required": ["fraction"],
                         "properties": {"fraction": NUMBER, "cost_model": {"type": "string"},
                                        "within_budget": {"type": "boolean"},
                                        "models": {"type": "object", "additionalProperties": {
                                            "type": "object", "required": ["cost", "fraction"],
                                            "properties": {"cost": NUMBER, "fraction": NUMBER}}}},
                         "anyOf": [{"required": ["models"]},  # else arqbench 0.1's flat costs
                                   {"required": OLD_COSTS, "properties": {k: NUMBER for k in OLD_COSTS}}]},
                "certificates": {"type": "array", "items": {
                    "type": "object", "required": ["index", "label", "prediction", "radius"],
                    "properties": {"index": INTEGER, "label": INTEGER, "prediction": INTEGER, "radius": NUMBER}}},
            },
        },
    }


def is_result(data) -> bool:
    return isinstance(data, dict) and IDENTITY <= set(data)


def check(data, path: Path) -> dict:
    """``data`` if it is a well-formed result record, else one clear error naming ``path`` and the problem."""
    if not is_result(data):
        raise ArqbenchError(f"result file {path} is not an arqbench result; delete it or move it out of the results dir")
    check_json(data, _schema(), f"result file {path} is damaged", "a result written by `arqbench run`; re-run that "
               "cell with --force, or delete the file")
    if isinstance(data.get("search"), dict) and "history" in data["search"]:
        data["search"]["history"] = history.expand(data["search"]["history"])
    protocol = data["config"]["protocol"]
    if "test_images" in protocol:
        for key, value in ADDED_SETTINGS.items():
            protocol.setdefault(key, value)
        if data["method"] != REFERENCE:
            for key, value in ADDED_QUANTIZED_SETTINGS.items():
                protocol.setdefault(key, value)
    return data


def read(path: Path) -> dict:
    return check(read_json(path, "result file"), path)


def read_if_result(path: Path, what: str = "file") -> dict | None:
    """The result record at ``path``, or None when the file holds other JSON (e.g. a plain policy file)."""
    data = read_json(path, what)
    return check(data, path) if is_result(data) else None


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
        "threads": torch.get_num_threads(),  # CPU results (training above all) depend on it
        "platform": platform.platform(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu": cpu_name(),  # another CPU may round differently (README, "Reproducing a row")
        "plugin_api": PLUGIN_API,  # the plugin contract the plugins below were loaded under
        "plugins": plugin_versions(),
    }


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
