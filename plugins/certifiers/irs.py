"""Certifier ``irs``: incremental randomized smoothing (Ugare et al., ICLR 2024).

The float model f is certified once per (reference, data, settings) and cached per example:
cA, pA_lower and f's predictions on the n estimation samples (the noise itself is replayed
from its seed). A modified model f_p then spends N_p = ceil(n_p * n) samples per example:

    zeta = Clopper-Pearson upper bound (at alpha_zeta) on P(f_p(x+e) != f(x+e)) from the
           disagreements on the first N_p replayed samples
    R    = sigma * Phi^-1(pA_lower - zeta), abstaining when pA_lower - zeta < 0.5,

a certificate of confidence 1 - (alpha + alpha_zeta). When f's pA_lower >= gamma the bound
would cost more than it saves, and f_p is certified from scratch (Cohen's CERTIFY at level
alpha + alpha_zeta: n0 samples choose cA, N_p samples bound pA) on noise of its own: selection
and estimation streams that no other estimate uses, so the certificate does not depend on the
float samples that chose the branch. Its confidence is 1 - (alpha + alpha_zeta) as well.

Options: ``n_p`` (a fraction of n, default 0.1), ``gamma`` (0.99; the IRS paper uses 0.995 on
ImageNet), ``alpha_zeta`` (0.001).
"""

import math
import time
from collections import Counter
from dataclasses import asdict, replace

import torch

from arqbench.contract import ABSTAIN, Certificate, Reference, SmoothingConfig
from arqbench.errors import ArqbenchError
from arqbench.hookspecs import hookimpl
from arqbench.toolkit import (
    ESTIMATION,
    NOISE_SCHEME,
    REESTIMATION,
    RESELECTION,
    batched,
    certified_radius,
    certify_many,
    generators,
    group_size,
    home,
    key_hash,
    sample_predictions,
    torch_load_cached,
    torch_save_atomic,
    upper_confidence_bound,
)


class FloatCertificates:
    """The reference model's certification, one cache file per example, memoised in memory."""

    def __init__(self, reference: Reference, config: SmoothingConfig, num_classes: int, device: torch.device,
                 stats: Counter):
        key = {**reference.key, "smoothing": asdict(config), "device": device.type, "noise": NOISE_SCHEME}
        self.dir = home() / "irs" / key_hash(key)
        self.reference, self.config, self.num_classes, self.device = reference, config, num_classes, device
        self.stats = stats
        self.ledger = reference.ledger
        self.memory: dict[int, dict] = {}

    def get(self, group: list) -> list[dict]:
        """The cached entry of each (index, x, label), certifying the missing ones together."""
        missing = [ex for ex in group if ex[0] not in self.memory and not self._load(ex[0])]
        if missing:
            start = time.perf_counter()
            config = self.config
            xs = torch.stack([x for _, x, _ in missing]).to(self.device)
            estimation = sample_predictions(self.reference.model, xs, config.n, config.sigma, config.batch_size,
                                            generators(self.device, config.seed, [i for i, _, _ in missing], ESTIMATION),
                                            config.precision)
            certs = certify_many(self.reference.model, missing, config, self.num_classes, estimation)
            seconds = (time.perf_counter() - start) / len(missing)
            for cert, predictions in zip(certs, estimation):
                entry = {"c_a": cert.prediction, "p_lower": cert.p_lower, "predictions": predictions.to(torch.int16),
                         "seconds": seconds}
                torch_save_atomic(self.dir / f"{cert.index}.pt", {**entry, "predictions": entry["predictions"].cpu()})
                self.memory[cert.index] = entry
                if self.ledger is not None:
                    self.ledger.measured(self.item(cert.index))
            self.stats["float_certified"] += len(missing)
        fresh = {index for index, _, _ in missing}
        self.stats["float_reused"] += sum(index not in fresh for index, _, _ in group)
        return [self.memory[index] for index, _, _ in group]

    def item(self, index: int) -> str:
        """The ledger's key of one example's cached certification (``Reference.ledger``)."""
        return f"irs/{self.dir.name}/{index}"

    def _load(self, index: int) -> bool:
        """Reads an example's cached certification from disk (reported to the ledger once, at its seconds)."""
        entry = torch_load_cached(self.dir / f"{index}.pt")
        if entry is None or len(entry["predictions"]) != self.config.n:
            return False
        entry["predictions"] = entry["predictions"].to(self.device)
        self.memory[index] = entry
        if self.ledger is not None:
            self.ledger.reused(self.item(index), float(entry.get("seconds", 0.0)))
        return True


class IncrementalRS:
    def __init__(self, n_p: float = 0.1, gamma: float = 0.99, alpha_zeta: float = 0.001):
        if not (isinstance(n_p, (int, float)) and 0 < n_p <= 1):
            raise ArqbenchError(f"irs.n_p is a fraction of n in (0, 1], got {n_p!r}")
        if not (isinstance(gamma, (int, float)) and 0.5 <= gamma <= 1):
            raise ArqbenchError(f"irs.gamma must be in [0.5, 1], got {gamma!r}")
        if not (isinstance(alpha_zeta, (int, float)) and 0 < alpha_zeta < 0.5):
            raise ArqbenchError(f"irs.alpha_zeta must be in (0, 0.5), got {alpha_zeta!r}")
        self.n_p, self.gamma, self.alpha_zeta = float(n_p), float(gamma), float(alpha_zeta)
        self.stats: Counter = Counter()
        self._float: dict[str, FloatCertificates] = {}

    def samples(self, config: SmoothingConfig) -> int:
        """N_p: the samples a modified model spends per example."""
        return max(1, math.ceil(self.n_p * config.n))

    def certify(self, model, examples, config, num_classes, reference=None):
        """One Certificate per (index, x, label), holding with probability >= 1 - (alpha + alpha_zeta)."""
        if reference is None:
            raise ArqbenchError("certifier 'irs' needs the float reference model; use it through `arqbench run` "
                                "or `arqbench certify --policy`, or choose --certifier rs")
        device = next(model.parameters()).device
        floats = self._float_certificates(reference, config, num_classes, device)
        n_p = self.samples(config)
        certificates = []
        for group in batched(examples, group_size(config, n_p)):
            certificates += self._certify_group(model, floats.get(group), group, config, num_classes, n_p)
        return certificates

    def _float_certificates(self, reference, config, num_classes, device) -> FloatCertificates:
        floats = FloatCertificates(reference, config, num_classes, device, self.stats)
        return self._float.setdefault(str(floats.dir), floats)

    def _certify_group(self, model, entries, group, config, num_classes, n_p) -> list[Certificate]:
        start = time.perf_counter()
        device = next(model.parameters()).device
        scratch = [ex for ex, entry in zip(group, entries) if entry["p_lower"] >= self.gamma]
        incremental = [(ex, entry) for ex, entry in zip(group, entries) if entry["p_lower"] < self.gamma]
        results = {}
        if scratch:  # from scratch, on noise of its own (module docstring)
            fresh = replace(config, n=n_p, alpha=config.alpha + self.alpha_zeta)
            for cert in certify_many(model, scratch, fresh, num_classes, phases=(RESELECTION, REESTIMATION)):
                cert.details.update({"fallback": True, "n_p": n_p})
                results[cert.index] = cert
        if incremental:
            xs = torch.stack([x for (_, x, _), _ in incremental]).to(device)
            replayed = sample_predictions(model, xs, n_p, config.sigma, config.batch_size,
                                          generators(device, config.seed, [i for (i, _, _), _ in incremental], ESTIMATION),
                                          config.precision)
            reference = torch.stack([entry["predictions"][:n_p] for _, entry in incremental]).long()
            disagreements = (replayed != reference).sum(dim=1).tolist()
            c_a = torch.tensor([entry["c_a"] for _, entry in incremental], device=device)[:, None]
            float_agree = (reference == c_a).sum(dim=1).tolist()
            candidate_agree = (replayed == c_a).sum(dim=1).tolist()
            seconds = (time.perf_counter() - start) / len(group)
            for ((index, _, label), entry), d, k_f, k_p in zip(incremental, disagreements, float_agree,
                                                               candidate_agree):
                zeta = upper_confidence_bound(d, n_p, self.alpha_zeta)
                p_lower = entry["p_lower"] - zeta
                float_count = int((entry["predictions"] == entry["c_a"]).sum())
                details = {"fallback": False, "c_a": entry["c_a"], "zeta": zeta, "disagreements": d, "n_p": n_p,
                           "float_count": float_count, "float_n": config.n, "float_agree": k_f,
                           "candidate_agree": k_p}
                abstain = p_lower < 0.5
                results[index] = Certificate(index, int(label), ABSTAIN if abstain else entry["c_a"],
                                             0.0 if abstain else certified_radius(config.sigma, p_lower),
                                             p_lower, n_p - d, n_p, seconds, details)
        self.stats["fallback"] += len(scratch)
        self.stats["incremental"] += len(incremental)
        return [results[index] for index, _, _ in group]


@hookimpl
def register_certifier(register):
    register("irs", IncrementalRS, default="profile")
