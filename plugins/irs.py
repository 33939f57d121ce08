"""Certifier ``irs``: incremental randomized smoothing (Ugare et al., ICLR 2024).

The float model f is certified once per (reference, data, settings) and cached per example:
cA, pA_lower and f's predictions on the n estimation samples (the noise itself is replayed
from its seed). A modified model f_p then spends n_p = np * n samples per example:

    zeta = Clopper-Pearson upper bound (at alpha_zeta) on P(f_p(x+e) != f(x+e)) from the
           disagreements on the first n_p replayed samples
    R    = sigma * Phi^-1(pA_lower - zeta), abstaining when pA_lower - zeta < 0.5,

a certificate of confidence 1 - (alpha + alpha_zeta). When f's pA_lower >= gamma the bound
would cost more than it saves, and f_p is certified from scratch with n_p samples at level
alpha + alpha_zeta, for f's class cA (chosen on selection samples independent of them).
"""

import math
import time
from collections import Counter
from dataclasses import asdict, replace

import torch

from arqbench.errors import ArqbenchError
from arqbench.files import home, key_hash, torch_load_cached, torch_save_atomic
from arqbench.hookspecs import hookimpl
from arqbench.smoothing.core import (
    ABSTAIN,
    ESTIMATION,
    Certificate,
    batched,
    certified_radius,
    certify_many,
    generators,
    group_size,
    sample_predictions,
    upper_confidence_bound,
)


class FloatCertificates:
    """The reference model's certification, one cache file per example, memoised in memory."""

    def __init__(self, reference, config, num_classes: int, device: torch.device, stats: Counter):
        key = {**reference.key, "smoothing": asdict(config), "device": device.type}
        self.dir = home() / "irs" / key_hash(key)
        self.reference, self.config, self.num_classes, self.device = reference, config, num_classes, device
        self.stats = stats
        self.memory: dict[int, dict] = {}

    def get(self, group: list) -> list[dict]:
        """The cached entry of each (index, x, label), certifying the missing ones together."""
        missing = [ex for ex in group if ex[0] not in self.memory and not self._load(ex[0])]
        if missing:
            config = self.config
            xs = torch.stack([x for _, x, _ in missing]).to(self.device)
            estimation = sample_predictions(self.reference.model, xs, config.n, config.sigma, config.batch_size,
                                            generators(self.device, config.seed, [i for i, _, _ in missing], ESTIMATION))
            certs = certify_many(self.reference.model, missing, config, self.num_classes, estimation)
            for cert, predictions in zip(certs, estimation):
                entry = {"c_a": cert.prediction, "p_lower": cert.p_lower, "predictions": predictions.to(torch.int16)}
                torch_save_atomic(self.dir / f"{cert.index}.pt", {**entry, "predictions": entry["predictions"].cpu()})
                self.memory[cert.index] = entry
            self.stats["float_certified"] += len(missing)
        self.stats["float_reused"] += len(group) - len(missing)
        return [self.memory[index] for index, _, _ in group]

    def _load(self, index: int) -> bool:
        entry = torch_load_cached(self.dir / f"{index}.pt")
        if entry is None or len(entry["predictions"]) != self.config.n:
            return False
        entry["predictions"] = entry["predictions"].to(self.device)
        self.memory[index] = entry
        return True


class IncrementalRS:
    def __init__(self, alpha_zeta: float = 0.001):
        self.alpha_zeta = alpha_zeta
        self.stats: Counter = Counter()
        self._float: dict[str, FloatCertificates] = {}

    def certify(self, model, examples, config, num_classes, reference=None):
        if reference is None:
            raise ArqbenchError("certifier 'irs' needs the float reference model; use it through `arqbench run` "
                                "or `arqbench certify --policy`, or choose --certifier rs")
        device = next(model.parameters()).device
        floats = self._float_certificates(reference, config, num_classes, device)
        n_p = max(1, math.ceil(reference.np * config.n))
        certificates = []
        for group in batched(examples, group_size(config, n_p)):
            certificates += self._certify_group(model, floats.get(group), group, config, num_classes, n_p,
                                                reference.gamma)
        return certificates

    def _float_certificates(self, reference, config, num_classes, device) -> FloatCertificates:
        floats = FloatCertificates(reference, config, num_classes, device, self.stats)
        return self._float.setdefault(str(floats.dir), floats)

    def _certify_group(self, model, entries, group, config, num_classes, n_p, gamma) -> list[Certificate]:
        start = time.perf_counter()
        device = next(model.parameters()).device
        scratch = [ex for ex, entry in zip(group, entries) if entry["p_lower"] >= gamma]
        incremental = [(ex, entry) for ex, entry in zip(group, entries) if entry["p_lower"] < gamma]
        results = {}
        if scratch:  # from scratch: n_p fresh-for-f_p samples bound f_p's pA for f's cA
            c_a = torch.tensor([entry["c_a"] for entry in entries if entry["p_lower"] >= gamma], device=device)
            for cert in certify_many(model, scratch, replace(config, n=n_p, alpha=config.alpha + self.alpha_zeta),
                                     num_classes, candidates=c_a):
                cert.details = {"fallback": True}
                results[cert.index] = cert
        if incremental:
            xs = torch.stack([x for (_, x, _), _ in incremental]).to(device)
            replayed = sample_predictions(model, xs, n_p, config.sigma, config.batch_size,
                                          generators(device, config.seed, [i for (i, _, _), _ in incremental], ESTIMATION))
            reference = torch.stack([entry["predictions"][:n_p] for _, entry in incremental]).long()
            disagreements = (replayed != reference).sum(dim=1).tolist()
            seconds = (time.perf_counter() - start) / len(group)
            for ((index, _, label), entry), d in zip(incremental, disagreements):
                zeta = upper_confidence_bound(d, n_p, self.alpha_zeta)
                p_lower = entry["p_lower"] - zeta
                details = {"fallback": False, "zeta": zeta, "disagreements": d, "n_p": n_p}
                abstain = p_lower < 0.5
                results[index] = Certificate(index, int(label), ABSTAIN if abstain else entry["c_a"],
                                             0.0 if abstain else certified_radius(config.sigma, p_lower),
                                             p_lower, n_p - d, n_p, seconds, details)
        self.stats["fallback"] += len(scratch)
        self.stats["incremental"] += len(incremental)
        return [results[index] for index, _, _ in group]


@hookimpl
def register_certifier(register):
    register("irs", IncrementalRS)
