"""Saved quantized models: what a cell fine-tuned, kept beside its result file so it can be re-certified,
exported or used without re-running its search or fine-tune.

``arqbench run`` writes ``<method>-seed<n>.pt`` beside ``<method>-seed<n>.json`` (``--no-save-models`` to
skip). The file is a ``torch.save``d dict that ``torch.load(weights_only=True)`` reads: the benchmark, sigma,
policy, quantizer (name and options), the quantized model's state_dict (weights, BatchNorm statistics,
input normalisation, the quantizer's calibrated ranges or learned steps), the cell, its protocol, the
base model's fingerprint and versions. ``load`` rebuilds the model without any data: the benchmark's fresh
model, quantized with an empty calibration, then the saved state_dict loaded (the quantizer contract,
``arqbench.contract.Quantizer``, makes that the saved function, bit for bit).
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from arqbench import plugins
from arqbench.errors import ArqbenchError
from arqbench.files import torch_save_atomic
from arqbench.pipeline.config import SHARED, create_benchmark
from arqbench.quantization.policy import Policy

FORMAT = "arqbench-model"
VERSION = 1
SUFFIX = ".pt"


def model_path(result_path: Path) -> Path:
    """Where the model of the result file ``result_path`` is saved: beside it, ``.pt`` for ``.json``."""
    return Path(result_path).with_suffix(SUFFIX)


@dataclass
class SavedModel:
    """A quantized model rebuilt from its file, with what it was made from."""

    model: nn.Module  # eval mode, on the device it was loaded to
    benchmark: object  # the benchmark plugin object (radii, num_classes, splits ...)
    sigma: float
    policy: Policy
    quantizer: str
    cell: dict  # benchmark, sigma, budget, method, seed
    protocol: dict  # the protocol settings of the run that made it
    base_model: dict = field(default_factory=dict)  # fingerprint of the float model it was quantized from
    versions: dict = field(default_factory=dict)
    path: Path | None = None


def save(path: Path, model: nn.Module, *, cell: dict, policy: Policy, protocol: dict, base_model: dict,
         versions: dict) -> dict:
    """Write ``model`` (quantized with ``protocol["quantizer"]``) atomically to ``path``; returns what the result
    records of it: ``{"path": file name (relative to the result), "bytes": size}``."""
    options = protocol.get("options") or {}
    name, quantizer = cell["benchmark"], protocol["quantizer"]
    payload = {
        "format": FORMAT, "version": VERSION,
        "benchmark": name, "benchmark_options": _options("benchmark", name, options),
        "sigma": float(cell["sigma"]), "policy": {k: [int(v[0]), int(v[1])] for k, v in policy.items()},
        "quantizer": quantizer, "quantizer_options": _options("quantizer", quantizer, options),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        **_plain({"cell": cell, "protocol": protocol, "base_model": base_model, "versions": versions}),
    }
    torch_save_atomic(path, payload)
    return {"path": Path(path).name, "bytes": Path(path).stat().st_size}


def _plain(data: dict) -> dict:
    """Plain Python values (str for str subclasses such as ``torch.__version__``), so ``weights_only`` loads them."""
    return json.loads(json.dumps(data, default=str))


def _options(kind: str, name: str, options: dict) -> dict:
    return plugins.resolve_options(kind, name, options.get(name), options.get(SHARED))


def read(path: Path) -> dict:
    """The saved file's contents; anything that is not an arqbench model file is one clear error."""
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise ArqbenchError(f"model file {path} {what}; pass the .pt file `arqbench run` saves beside a result")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ArqbenchError(f"{path} is not an arqbench model file ({type(exc).__name__}); pass the .pt file "
                            f"`arqbench run` saves beside a result") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ArqbenchError(f"{path} is not an arqbench model file (no '{FORMAT}' format tag); pass the .pt file "
                            f"`arqbench run` saves beside a result")
    if data.get("version", 0) > VERSION:
        raise ArqbenchError(f"{path} was saved by a newer arqbench (model file version {data['version']}, this one "
                            f"reads {VERSION}); upgrade arqbench")
    return data


def load(path: Path, device: str | torch.device = "cpu") -> SavedModel:
    """Rebuild the saved quantized model (no data, no training): the benchmark's model, quantized with the
    saved policy and quantizer on an empty calibration, then the saved state_dict."""
    data = read(path)
    name = data["benchmark"]
    benchmark = create_benchmark(name, {name: data["benchmark_options"]})
    policy = {k: (int(v[0]), int(v[1])) for k, v in data["policy"].items()}
    quantizer = plugins.create("quantizer", data["quantizer"], **data["quantizer_options"])
    model = quantizer.quantize(benchmark.build_model(), policy, [])
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        raise ArqbenchError(f"model file {path} does not fit {name}'s model under quantizer '{data['quantizer']}' "
                            f"({str(exc).splitlines()[0]}); it was saved by another version of that plugin") from None
    model = model.to(torch.device(device)).eval()
    return SavedModel(model, benchmark, data["sigma"], policy, data["quantizer"], data["cell"], data["protocol"],
                      data.get("base_model") or {}, data.get("versions") or {}, Path(path))
