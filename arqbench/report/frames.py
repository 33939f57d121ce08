"""Result files as tidy pandas DataFrames: one row per cell (``results_frame``), one per certified image
(``certificates_frame``), for notebooks and scripts (``arqbench.load_results``, ``arqbench.load_certificates``).

Columns of a cell's row, all flat:

- identity: ``benchmark, method, sigma, budget`` (NaN for fp32 rows), ``seed, status, error``
- numbers: ``clean_acc, smoothed_acc, acr, acr_low, acr_high`` (Student's t 95% interval over the certified
  images, ``arqbench.smoothing.intervals``), ``abstain_rate, images, cert_at_<r>`` for each radius r, then
  ``<cost model>_fraction`` and ``<cost model>_cost`` for every cost model (``bitops_fraction``, ...),
  ``cost_model, cost_fraction, within_budget``, the timings ``search_s`` (own work), ``search_wait_s,
  search_reused_s, search_cost_s`` (own + reused; ``arqbench.pipeline.timing``, derived for older files),
  ``finetune_s, certify_s``
- protocol: ``n0, n, alpha, test_images, subset, precision, batch_size, finetune_epochs, certifier, quantizer,
  search_activations, keep_ends``
- provenance: ``policy`` (a dict), ``base_model`` (fingerprint), ``model_path, model_bytes`` (the saved model,
  None if not saved), ``path`` (the result file), ``created, arqbench_version, torch_version, device``
"""

from pathlib import Path

import pandas as pd

from arqbench.pipeline.results import read, read_all
from arqbench.pipeline.timing import SEARCH_TIMINGS, search_timing
from arqbench.smoothing.intervals import mean_interval, per_image

PROTOCOL = ("n0", "n", "alpha", "test_images", "subset", "precision", "batch_size", "finetune_epochs", "certifier",
            "quantizer", "search_activations", "keep_ends")
TIMINGS = (*SEARCH_TIMINGS, "finetune_s", "certify_s")
IDENTITY = ["benchmark", "method", "sigma", "budget", "seed", "status", "error"]


def results(path: Path) -> list[dict]:
    """The result records at ``path``: one result file, or every result under a results directory."""
    path = Path(path)
    if path.is_file():
        return [{**read(path), "path": str(path)}]
    return read_all(path)


def cell_row(result: dict) -> dict:
    """One result record as a flat row (module docstring)."""
    row = {key: result.get(key) for key in IDENTITY}
    metrics = result.get("metrics") or {}
    for key in ("clean_acc", "smoothed_acc", "acr"):
        row[key] = metrics.get(key)
    images = per_image(result.get("certificates") or [])
    interval = mean_interval(images.values()) if images else None
    row["acr_low"], row["acr_high"] = (interval.low, interval.high) if interval else (None, None)
    row["abstain_rate"], row["images"] = metrics.get("abstain_rate"), metrics.get("images")
    for radius, value in (metrics.get("certified_acc") or {}).items():
        row[f"cert_at_{radius}"] = value
    cost = result.get("cost") or {}
    for name, model in (cost.get("models") or {}).items():
        row[f"{name}_fraction"], row[f"{name}_cost"] = model.get("fraction"), model.get("cost")
    row["cost_model"], row["cost_fraction"] = cost.get("cost_model"), cost.get("fraction")
    row["within_budget"] = cost.get("within_budget")
    timing = {**(result.get("timing") or {}), **search_timing(result)}
    row.update({key: timing.get(key) for key in TIMINGS})
    protocol = (result.get("config") or {}).get("protocol") or {}
    row.update({key: protocol.get(key) for key in PROTOCOL})
    row["policy"] = result.get("policy")
    row["base_model"] = (result.get("base_model") or {}).get("fingerprint")
    model = result.get("model") or {}
    where = result.get("path")
    row["model_path"] = str(Path(where).parent / model["path"]) if model and where else None
    row["model_bytes"] = model.get("bytes")
    versions = result.get("versions") or {}
    row.update({"path": where, "created": result.get("created"), "arqbench_version": versions.get("arqbench"),
                "torch_version": versions.get("torch"), "device": versions.get("device")})
    return row


def results_frame(path: Path) -> pd.DataFrame:
    """One row per cell of the result file or results directory ``path`` (``frame``)."""
    return frame(results(path))


def frame(records: list[dict]) -> pd.DataFrame:
    """One row per result record, ordered by benchmark, sigma, budget (fp32 rows first), method, seed."""
    rows = [cell_row(r) for r in records]
    if not rows:
        return pd.DataFrame(columns=IDENTITY)
    table = pd.DataFrame(rows)
    table["budget"] = table["budget"].astype(float)
    order = table.assign(_fp32=table["budget"].isna()).sort_values(
        ["benchmark", "sigma", "_fp32", "budget", "method", "seed"], ascending=[True, True, False, True, True, True])
    return order.drop(columns="_fp32").reset_index(drop=True)


def certificates_frame(path: Path) -> pd.DataFrame:
    """One row per (cell, certified image): the cell's identity, then ``index, label, prediction, radius,
    correct, p_lower, count, n, seconds`` (``prediction`` -1 where it abstained)."""
    rows = []
    for result in results(path):
        identity = {key: result.get(key) for key in ("benchmark", "method", "sigma", "budget", "seed")}
        for cert in result.get("certificates") or []:
            rows.append({**identity, **{k: cert[k] for k in ("index", "label", "prediction", "radius", "p_lower",
                                                             "count", "n", "seconds")},
                         "correct": cert["prediction"] == cert["label"], "path": result.get("path")})
    columns = ["benchmark", "method", "sigma", "budget", "seed", "index", "label", "prediction", "radius", "p_lower",
               "count", "n", "seconds", "correct", "path"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["budget"] = frame["budget"].astype(float)
    return frame
