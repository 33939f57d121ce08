"""One leaderboard cell (DESIGN §4): search -> the same fine-tune -> the same certification -> the numbers."""

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Subset

from arqbench import plugins
from arqbench.errors import ArqbenchError
from arqbench.models.base_model import base_model
from arqbench.models.benchmark import Benchmark
from arqbench.models.data import ProtocolData
from arqbench.models.training import accuracy, train
from arqbench.pipeline.config import Protocol
from arqbench.pipeline.results import REFERENCE, Cell, now, versions
from arqbench.quantization import policy as policies
from arqbench.quantization.layers import LayerInfo, profile_layers
from arqbench.search.context import SearchContext, calibration_batches
from arqbench.smoothing.certification import Reference, certify_subset
from arqbench.smoothing.core import SmoothingConfig
from arqbench.smoothing.metrics import summarize

CERTIFICATION_SETTINGS = ("n0", "n", "alpha", "test_images", "subset", "batch_size", "certifier")


@dataclass
class Prepared:
    """Everything shared by the cells of one (benchmark, sigma): data, base model, layer profile."""

    benchmark: Benchmark
    sigma: float
    data: ProtocolData
    model: nn.Module
    source: dict
    layers: list[LayerInfo]
    fingerprint: str

    @property
    def reference_key(self) -> dict:
        """Names the float base model (by its weights) for caches keyed by it."""
        return {"benchmark": self.benchmark.name, "sigma": self.sigma, "model": self.fingerprint}

    def reference(self, protocol: Protocol, data: str) -> Reference:
        """The float model as the reference of incremental certification on split ``data`` ("test", "search")."""
        return Reference(self.model, {**self.reference_key, "data": data}, protocol.np, self.benchmark.gamma)


def fingerprint(model: nn.Module) -> str:
    """A hash of the weights: caches keyed by it are rebuilt whenever the base model changes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def prepare(benchmark: Benchmark, sigma: float, protocol: Protocol, device: torch.device,
            data_root: Path | None = None, checkpoint: Path | None = None,
            normalization: str | None = None) -> Prepared:
    splits = benchmark.splits(data_root)
    data = ProtocolData.from_splits(splits, protocol.test_images, benchmark.search_images, protocol.subset)
    model, source = base_model(benchmark, sigma, splits, device, checkpoint, data_root, normalization)
    layers = profile_layers(model, benchmark.input_shape)
    return Prepared(benchmark, sigma, data, model, source, layers, fingerprint(model))


def fixed_layers(prepared: Prepared, protocol: Protocol) -> set[str]:
    return policies.fixed_layers(prepared.layers, protocol.keep_ends)


def smoothing_config(protocol: Protocol, sigma: float, seed: int) -> SmoothingConfig:
    return SmoothingConfig(sigma=sigma, n0=protocol.n0, n=protocol.n, alpha=protocol.alpha,
                           batch_size=protocol.batch_size, seed=seed)


def cost_summary(prepared: Prepared, policy: policies.Policy | None, protocol: Protocol) -> dict:
    """BitOPs and size of a policy (None: the float model), and its fraction of float under the run's cost model."""
    layers = prepared.layers
    full = policies.float_policy(layers)
    policy = policy or full
    bitops = plugins.create("cost_model", "bitops")
    size = plugins.create("cost_model", "size")
    run_model = plugins.create("cost_model", protocol.cost_model)
    return {
        "bitops": bitops.cost(layers, policy),
        "bitops_fraction": bitops.cost(layers, policy) / bitops.cost(layers, full),
        "size_bits": size.cost(layers, policy),
        "size_fraction": size.cost(layers, policy) / size.cost(layers, full),
        "cost_model": protocol.cost_model,
        "fraction": run_model.cost(layers, policy) / run_model.cost(layers, full),
    }


def certify_model(prepared: Prepared, model: nn.Module, protocol: Protocol, seed: int, description: str,
                  shard: tuple[int, int] = (0, 1)):
    """Certify ``model`` on the certification subset, or on its ``shard = (k, K)``: the k-th of K
    contiguous slices. Certificates are per-example seeded, so the K slices' certificates, concatenated
    in order, are those of the whole subset."""
    certifier = plugins.create("certifier", protocol.certifier)
    config = smoothing_config(protocol, prepared.sigma, seed)
    reference = prepared.reference(protocol, "test")
    subset = prepared.data.certify
    k, parts = shard
    if parts > 1:
        indices = subset.indices
        subset = Subset(subset.dataset, indices[k * len(indices) // parts:(k + 1) * len(indices) // parts])
    start = time.perf_counter()
    certs = certify_subset(certifier, model, subset, config, prepared.benchmark.num_classes,
                           reference, description)
    return certs, time.perf_counter() - start


def quantized_model(prepared: Prepared, protocol: Protocol, policy: policies.Policy, seed: int,
                    device: torch.device, description: str = "fine-tune") -> nn.Module:
    """The protocol's quantized model: the run's quantizer, calibrated, then the common noisy fine-tune."""
    quantizer = plugins.create("quantizer", protocol.quantizer)
    model = quantizer.quantize(prepared.model, policy, calibration_batches(prepared.data, prepared.sigma, device, seed))
    if protocol.finetune_epochs > 0:
        train(model, prepared.data.fit, prepared.benchmark.finetune, prepared.sigma, device, seed,
              epochs=protocol.finetune_epochs, description=description)
    return model.eval()


@dataclass
class Trained:
    """A cell after search and fine-tune: the model to certify and what the result record needs from that stage."""

    model: nn.Module | None  # None once shipped apart from the rest (sharded certification)
    policy: policies.Policy | None  # None for the fp32 row
    search: dict
    timing: dict
    clean_acc: float
    versions: dict


def train_cell(cell: Cell, prepared: Prepared, protocol: Protocol, device: torch.device,
               policy: policies.Policy | None = None) -> Trained:
    """Search (unless ``policy`` is given, or the cell is the fp32 row) and fine-tune one cell's model."""
    timing = {"search_s": 0.0, "finetune_s": 0.0, "certify_s": 0.0}
    search_info: dict = {}
    model = prepared.model
    if cell.method != REFERENCE:
        start = time.perf_counter()
        if policy is None:
            torch.manual_seed(cell.seed)
            ctx = SearchContext(
                model=prepared.model, layers=prepared.layers, benchmark=prepared.benchmark, data=prepared.data,
                quantizer=plugins.create("quantizer", protocol.quantizer),
                cost_model=plugins.create("cost_model", protocol.cost_model), budget=cell.budget,
                sigma=cell.sigma, seed=cell.seed, device=device, fixed=fixed_layers(prepared, protocol),
                search_activations=protocol.search_activations, smoothing=smoothing_config(protocol, cell.sigma, cell.seed),
                settings=protocol.as_dict(), reference_key=prepared.reference_key,
            )
            found = plugins.create("search", cell.method, **protocol.options.get(cell.method, {})).search(ctx)
            policy, search_info = found.policy, found.info
        policy = policies.validate(policy, prepared.layers, f"policy from {cell.method}")
        timing["search_s"] = time.perf_counter() - start

        start = time.perf_counter()
        model = quantized_model(prepared, protocol, policy, cell.seed, device, f"fine-tune {cell.method}")
        timing["finetune_s"] = time.perf_counter() - start
    return Trained(model, policy, search_info, timing, accuracy(model, prepared.data.test, device), versions(device))


def cell_result(cell: Cell, prepared: Prepared, protocol: Protocol, trained: Trained, certs: list,
                certify_s: float) -> dict:
    """The result record of a cell from its trained stage and its certificates (in subset order)."""
    cost = cost_summary(prepared, trained.policy, protocol)
    if cell.budget is not None:
        cost["within_budget"] = cost["fraction"] <= cell.budget + 1e-12
    policy = trained.policy
    return {
        "benchmark": cell.benchmark, "method": cell.method, "sigma": cell.sigma, "budget": cell.budget,
        "seed": cell.seed, "status": "ok", "error": None,
        "policy": None if policy is None else {k: list(v) for k, v in policy.items()},
        "metrics": {"clean_acc": trained.clean_acc, **summarize(certs, prepared.benchmark.radii)},
        "cost": cost, "timing": {**trained.timing, "certify_s": certify_s}, "search": trained.search,
        "certificates": [c.as_dict() for c in certs],
        "base_model": {**prepared.source, "fingerprint": prepared.fingerprint},
        "config": config_record(cell, protocol), "versions": trained.versions, "created": now(),
    }


def run_cell(cell: Cell, prepared: Prepared, protocol: Protocol, device: torch.device,
             policy: policies.Policy | None = None) -> dict:
    """Run one cell and return its result record; ``policy`` replays a given policy instead of searching."""
    trained = train_cell(cell, prepared, protocol, device, policy)
    certs, seconds = certify_model(prepared, trained.model, protocol, cell.seed, f"certify {cell.method}")
    return cell_result(cell, prepared, protocol, trained, certs, seconds)


def config_record(cell: Cell, protocol: Protocol) -> dict:
    """What a re-run must match for a finished cell to be reused: the cell's identity and its protocol
    (for the fp32 row, only the certification settings)."""
    settings = protocol.as_dict()
    if cell.method == REFERENCE:
        settings = {k: settings[k] for k in CERTIFICATION_SETTINGS}
    return {"cell": {"benchmark": cell.benchmark, "sigma": cell.sigma, "budget": cell.budget,
                     "method": cell.method, "seed": cell.seed}, "protocol": settings}


def failed_result(cell: Cell, protocol: Protocol, error: BaseException) -> dict:
    message = str(error) if isinstance(error, ArqbenchError) else f"{type(error).__name__}: {error}"
    return {"benchmark": cell.benchmark, "method": cell.method, "sigma": cell.sigma, "budget": cell.budget,
            "seed": cell.seed, "status": "failed", "error": message.splitlines()[0] if message else repr(error),
            "config": config_record(cell, protocol), "created": now()}
