"""One leaderboard cell (DESIGN §4): search -> the same fine-tune -> the same certification -> its record.

``CellRun`` is the only place a cell is run. The local executor calls ``run``; the Ray executor calls
``train`` in one task and ``certify`` once per shard in others, then ``record``; ``arqbench certify``
replays a result file's policy through ``run``. Certificates are seeded per example, so a cell
certified in shards and merged in order is the cell certified at once.
"""

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Subset

from arqbench import checks, plugins, runtime
from arqbench.models.training import accuracy, finetune
from arqbench.pipeline import failures, saved
from arqbench.pipeline.config import Protocol
from arqbench.pipeline.prepare import Prepared
from arqbench.pipeline.results import REFERENCE, Cell, now, versions
from arqbench.quantization import policy as policies
from arqbench.quantization.costs import cost_summary
from arqbench.search.context import SearchContext, calibration_batches, equalized
from arqbench.search.ledger import Ledger
from arqbench.smoothing.certification import certify_subset
from arqbench.smoothing.core import Certificate, SmoothingConfig
from arqbench.smoothing.metrics import summarize

class Clock:
    """Wall and process CPU seconds since it was made."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> dict:
        return {"wall_s": time.perf_counter() - self.wall, "cpu_s": time.process_time() - self.cpu}


CERTIFICATION_SETTINGS = ("n0", "n", "alpha", "test_images", "subset", "batch_size", "precision", "certifier")


@dataclass
class Trained:
    """A cell after search and fine-tune: the model to certify and what the result record needs from that stage."""

    model: nn.Module | None  # None once shipped apart from the rest (sharded certification)
    policy: policies.Policy | None  # None for the fp32 row
    search: dict
    timing: dict
    clean_acc: float
    versions: dict
    finetune: dict = field(default_factory=dict)  # epochs, frozen_batchnorm; empty for the fp32 row


@dataclass
class CellRun:
    cell: Cell
    prepared: Prepared
    protocol: Protocol
    device: torch.device
    model_path: Path | None = None  # where ``record`` saves the fine-tuned quantized model (None: not saved)
    wait_for_shared: bool = True  # SearchContext.wait_for_shared of the cell's search

    def run(self, policy: policies.Policy | None = None, shards: int = 1) -> dict:
        """The whole cell: its record. ``policy`` replays a given policy instead of searching."""
        trained = self.train(policy)
        return self.record(trained, [self.certify(trained.model, (k, shards)) for k in range(shards)])

    def train(self, policy: policies.Policy | None = None) -> Trained:
        """Search (unless ``policy`` is given, or the cell is the fp32 row) and fine-tune the cell's model.
        The search's time is recorded in parts (``arqbench.search.ledger``): ``search_s`` (own work, waits
        excluded), ``search_wait_s``, ``search_reused_s`` and ``search_cost_s`` (own + reused). ``wall_s`` and
        ``cpu_s`` (this process's CPU seconds) cover the whole cell once ``record`` adds the certification, and
        ``load`` is the machine's 1-minute load average as the stage ended: a cell timed beside other work
        shows a CPU/wall ratio below its threads' (``arqbench.pipeline.timing.busy``)."""
        clock = Clock()
        timing = {"search_s": 0.0, "search_wait_s": 0.0, "search_reused_s": 0.0, "search_cost_s": 0.0,
                  "finetune_s": 0.0, "certify_s": 0.0}
        search: dict = {}
        tuning: dict = {}
        model = self.prepared.model
        if self.cell.method != REFERENCE:
            start = time.perf_counter()
            ledger = Ledger()
            if policy is None:
                policy, search = self.search(ledger)
            policy = policies.validate(policy, self.prepared.layers, f"policy from {self.cell.method}")
            timing["search_s"] = time.perf_counter() - start - ledger.wait_s
            timing["search_wait_s"], timing["search_reused_s"] = ledger.wait_s, ledger.reused_s
            timing["search_cost_s"] = timing["search_s"] + ledger.reused_s
            start = time.perf_counter()
            model, tuning = self.quantized_model(policy)
            timing["finetune_s"] = time.perf_counter() - start
        clean = accuracy(model, self.prepared.data.test, self.device, workers=self.prepared.data.workers)
        timing.update(clock.read(), load=os.getloadavg()[0])
        return Trained(model, policy, search, timing, clean, versions(self.device), tuning)

    def search(self, ledger: Ledger) -> tuple[policies.Policy, dict]:
        """The cell's method, with the run's options for it, on the cell's search context, which reports the
        cached work it reused and its waits to ``ledger``."""
        torch.manual_seed(self.cell.seed)
        context = self.context(ledger)
        found = self.protocol.create("search", self.cell.method).search(context)
        policy, info = checks.search_result(found, self.cell.method, context.layers, context.fixed, context.tied,
                                            context.search_activations, context.cost_fraction, context.budget)
        if context.finetunes:
            return policy, {**info, "candidate_finetunes": context.finetunes,
                            "frozen_batchnorm_finetunes": context.frozen_batchnorm_finetunes}
        return policy, info

    def context(self, ledger: Ledger | None = None) -> SearchContext:
        """What the cell's search method gets (``arqbench.search.context``)."""
        cell, prepared, protocol = self.cell, self.prepared, self.protocol
        return SearchContext(
            model=prepared.model, layers=prepared.layers, benchmark=prepared.benchmark, data=prepared.data,
            quantizer=protocol.create("quantizer", protocol.quantizer),
            cost_model=protocol.create("cost_model", protocol.cost_model), budget=cell.budget, sigma=cell.sigma,
            seed=cell.seed, device=self.device, fixed=prepared.fixed_layers(protocol),
            search_activations=protocol.search_activations, smoothing=self.smoothing(), protocol=protocol,
            reference_key=prepared.reference_key, wait_for_shared=self.wait_for_shared, ledger=ledger or Ledger(),
        )

    def quantized_model(self, policy: policies.Policy) -> tuple[nn.Module, dict]:
        """The protocol's quantized model (the run's quantizer, calibrated, then the common noisy fine-tune
        under the protocol's ``finetune_recipe``), and how it was fine-tuned: ``frozen_batchnorm`` when the
        fine-tune diverged and reran."""
        prepared, protocol = self.prepared, self.protocol
        model = self.calibrated(policy)
        frozen = protocol.finetune_epochs > 0 and finetune(
            model, prepared.data.finetune, prepared.benchmark.finetune, prepared.sigma, self.device,
            self.cell.seed, tuning=protocol.tuning(), epochs=protocol.finetune_epochs,
            description=f"fine-tune {self.cell.method}", workers=prepared.data.workers)
        return model.eval(), {"epochs": protocol.finetune_epochs, "frozen_batchnorm": frozen}

    def calibrated(self, policy: policies.Policy) -> nn.Module:
        """The base model (equalized as the protocol's ``finetune_recipe`` says) quantized by the run's quantizer
        for ``policy``, calibrated, not yet fine-tuned."""
        quantizer = self.protocol.create("quantizer", self.protocol.quantizer)
        calibration = calibration_batches(self.prepared.data, self.prepared.sigma, self.device, self.cell.seed)
        return checks.quantize(quantizer, self.protocol.quantizer, equalized(self.prepared.model, self.protocol.tuning()),
                               policy, calibration)

    def smoothing(self) -> SmoothingConfig:
        p = self.protocol
        return SmoothingConfig(sigma=self.cell.sigma, n0=p.n0, n=p.n, alpha=p.alpha, batch_size=p.batch_size,
                               seed=self.cell.seed, precision=p.precision)

    def certify(self, model: nn.Module, shard: tuple[int, int] = (0, 1)) -> tuple[list[Certificate], float, float]:
        """Certify ``model`` on the certification subset, or on its ``shard = (k, K)``: the k-th of K
        contiguous slices. Returns the certificates in subset order, the seconds it took, and the CPU seconds
        this process spent on it."""
        protocol, prepared = self.protocol, self.prepared
        certifier = protocol.create("certifier", protocol.certifier)
        subset = prepared.data.certify
        k, parts = shard
        if parts > 1:
            indices = subset.indices
            subset = Subset(subset.dataset, indices[k * len(indices) // parts:(k + 1) * len(indices) // parts])
        clock = Clock()
        runtime.channels_last(model, self.device, protocol.precision)
        certs = certify_subset(certifier, model, subset, self.smoothing(), prepared.benchmark.num_classes,
                               prepared.reference("test"), f"certify {self.cell.method}")
        spent = clock.read()
        return certs, spent["wall_s"], spent["cpu_s"]

    def record(self, trained: Trained, parts: list[tuple[list[Certificate], float, float]]) -> dict:
        """The result record from the trained stage and the certification shards' (certificates, seconds);
        with ``model_path``, the quantized model is saved there first (``arqbench.pipeline.saved``)."""
        cell, prepared, protocol = self.cell, self.prepared, self.protocol
        certs = [cert for part, _, _ in parts for cert in part]
        cost = cost_summary(prepared.layers, trained.policy, protocol)
        if cell.budget is not None:
            cost["within_budget"] = cost["fraction"] <= cell.budget + 1e-12
        policy = trained.policy
        model = None
        if self.model_path is not None and policy is not None and trained.model is not None:
            model = saved.save(self.model_path, trained.model, cell=config_record(cell, protocol)["cell"],
                               policy=policy, protocol=protocol.as_dict(),
                               base_model={"fingerprint": prepared.fingerprint}, versions=trained.versions)
        return {
            "benchmark": cell.benchmark, "method": cell.method, "sigma": cell.sigma, "budget": cell.budget,
            "seed": cell.seed, "status": "ok", "error": None,
            "policy": None if policy is None else {k: list(v) for k, v in policy.items()},
            "metrics": {"clean_acc": trained.clean_acc, **summarize(certs, prepared.benchmark.radii)},
            "cost": cost, "timing": {**trained.timing, "certify_s": sum(s for _, s, _ in parts),
                                     "wall_s": trained.timing["wall_s"] + sum(s for _, s, _ in parts),
                                     "cpu_s": trained.timing["cpu_s"] + sum(c for _, _, c in parts)},
            "search": trained.search, "layers": [layer.as_dict() for layer in prepared.layers],
            "certificates": [c.as_dict() for c in certs],
            "base_model": {**prepared.source, "fingerprint": prepared.fingerprint},
            "config": config_record(cell, protocol), "plugins": plugin_record(cell, protocol),
            "versions": trained.versions, "created": now(), **({"finetune": trained.finetune} if trained.finetune else {}),
            **({"model": model} if model else {}),
        }


def plugin_record(cell: Cell, protocol: Protocol) -> dict:
    """Each plugin the cell used, by kind, with every option it ran with (its defaults included)."""
    return {kind: {"name": name, "options": {**plugins.defaults(kind, name), **protocol.plugin_options(kind, name)}}
            for kind, name in used_plugins(cell, protocol).items()}


def used_plugins(cell: Cell, protocol: Protocol) -> dict[str, str]:
    """The plugin the cell uses of each kind, ``{kind: name}``."""
    used = {"benchmark": cell.benchmark, "quantizer": protocol.quantizer, "cost_model": protocol.cost_model,
            "certifier": protocol.certifier}
    if cell.method != REFERENCE:
        used["search"] = cell.method
    return used


def config_record(cell: Cell, protocol: Protocol) -> dict:
    """What a re-run must match for a finished cell to be reused: the cell's identity and its protocol,
    with the options of the plugins the cell runs (other search methods' options are not the cell's); for
    the fp32 row, only the certification settings, which base model it is, and the certifier's options."""
    settings = protocol.as_dict()
    searches = set(plugins.names("search")) - {cell.method}
    options = {name: o for name, o in protocol.options.items() if name not in searches}
    if cell.method == REFERENCE:
        settings = {k: settings[k] for k in (*CERTIFICATION_SETTINGS, "base_seeds")}
        options = {name: o for name, o in options.items() if name == protocol.certifier}
        if options:
            settings["options"] = options
    else:
        settings["options"] = options
    return {"cell": {"benchmark": cell.benchmark, "sigma": cell.sigma, "budget": cell.budget,
                     "method": cell.method, "seed": cell.seed}, "protocol": settings}


def failed_result(cell: Cell, protocol: Protocol, error: BaseException) -> dict:
    """A failed cell's record: ``error`` is one line naming the plugin that raised and the exception's type
    (``arqbench.pipeline.failures``), ``traceback`` the whole of it, for ``arqbench show``."""
    return {"benchmark": cell.benchmark, "method": cell.method, "sigma": cell.sigma, "budget": cell.budget,
            "seed": cell.seed, "status": "failed", "error": failures.summary(error, used_plugins(cell, protocol)),
            "traceback": failures.traceback_text(error), "config": config_record(cell, protocol), "created": now()}
