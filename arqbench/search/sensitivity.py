"""Per-layer robustness sensitivity: what the smoothed classifier loses when one layer alone is quantized.

For a quantizable layer i and bits (w, a), f_{i,w,a} is the float base model f with only layer i quantized
by the run's quantizer (weights at w bits, the layer's input activation at a bits, the common calibration
batches); every other layer stays float (the quantizer gets a policy naming layer i alone). Measured on the
search split (held out of the training data, never the certification subset):

- metric ``acr``: ACR and smoothed accuracy of the smoothed f_{i,w,a} on the first ``images`` search images,
  by the given certifier with f as the reference (``irs``: N_p = n_p x n replayed noisy samples per image
  against f's cached certification, or N_p fresh ones where it re-certifies from scratch); f itself is
  measured by the same certifier with the same settings and seeds (with ``irs``: f against itself, zero
  disagreements), so both sides share one estimator and its noise, and a layer left at float loses exactly 0;
- metric ``disagreement``: the fraction of N_p noisy samples per image (the noise IRS replays) on which
  f_{i,w,a} and f predict differently (the certifier only sets N_p);
- always ``clean_acc``: top-1 of the base classifier on the whole search split;

with ``X_drop = X(f) - X(f_{i,w,a})`` for each (disagreement is a loss already: 0 for f).

Points: (b, 8) for b in 2..8 (the weights), and (8, b) for b in 2..7 (the activations) when asked for. A
policy's sensitivity is *predicted* from them by additivity: the loss of a policy is the sum of its layers'
single-layer losses, and a layer's loss at (w, a) is s(w, 8) + s(8, a) - s(8, 8). Quantization errors of
different layers interact (they compound, or cancel), so this is an assumption whose quality (how well the
prediction ranks policies as their certified ACR does) has to be measured, not taken for granted.

Cost: (layers x points) quantize-and-calibrate passes, each followed by images x N_p noisy forwards and one
clean pass over the search split, plus f's own certification (images x n, cached by the certifier). Digits
defaults (100 images, n_p = 0.1 x 2000): every layer's weights, 7 x 7 points, about 1M forwards, took 20 s on
2 CPU cores, f's certification included; the 5 free layers with activations, 65 points, 21-29 s.

Measured points are cached under ``$ARQBENCH_HOME/sensitivity/<key>.json``, keyed by everything that changes
them (base model, sigma, seed, the quantizer and the certifier with their options, the certification
settings, images, metric); a request computes only the points the cache lacks.
"""

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch
from filelock import FileLock, Timeout
from torch.utils.data import Subset

from arqbench import files
from arqbench.console import info
from arqbench.errors import ArqbenchError, Busy
from arqbench.models.data import examples
from arqbench.quantization.policy import MAX_BITS, MIN_BITS, Policy
from arqbench.search.context import SearchContext
from arqbench.smoothing.core import ESTIMATION, generators, sample_predictions
from arqbench.smoothing.metrics import summarize

VERSION = 1  # bump when what a point measures changes
METRICS = ("acr", "disagreement")
IMAGES = 100  # search images certified per point (module docstring: the cost)
MAX_N = 10_000  # the certifier's n per point unless given: the run's n, at most this (a ranking, not a certificate)
MEASURES = ("acr", "smoothed_acc", "clean_acc", "disagreement")
BITS = tuple(range(MIN_BITS, MAX_BITS + 1))
__all__ = ["profile", "Profile", "policy_loss", "samples", "points", "METRICS", "MEASURES", "IMAGES", "MAX_N"]  # toolkit


def samples(run_n: int) -> int:
    """The certifier's n per point by default: the run's, capped at ``MAX_N`` so that at the paper's n = 100,000
    a ResNet-20 profile costs about half a final certification instead of five."""
    return min(run_n, MAX_N)


def points(activations: bool) -> list[tuple[int, int]]:
    """The (w_bits, a_bits) measured per layer: weights at every width, activations too when asked for."""
    weights = [(b, MAX_BITS) for b in BITS]
    return weights + ([(MAX_BITS, b) for b in BITS if b != MAX_BITS] if activations else [])


@dataclass
class Profile:
    """Measured single-layer points of one base model under one setting (module docstring)."""

    key: dict
    path: Path
    reference: dict  # f's own numbers under the same estimator
    rows: list[dict]  # one per (layer, w_bits, a_bits), in layer order
    reused: int = 0  # points read from the cache by this request
    computed: int = 0
    seconds: float = 0.0  # spent by this request, waits for another process's lock excluded

    def frame(self) -> pd.DataFrame:
        """The tidy table: one row per measured point, with the base model, sigma and seed it belongs to."""
        where = {"benchmark": self.key["reference"].get("benchmark"), "sigma": self.key["sigma"],
                 "seed": self.key["seed"], "metric": self.key["metric"]}
        return pd.DataFrame([{**where, **row} for row in self.rows])

    def sensitivity(self, layers: list[str], activations: bool, metric: str) -> dict[str, dict[tuple, float]]:
        """``{layer: {(w, a): s}}`` over the ILP's choices, s = the metric's loss (``acr``: acr_drop), a pair's
        value composed additively from the measured points (module docstring)."""
        column = "acr_drop" if metric == "acr" else "disagreement"
        value = {(r["layer"], r["w_bits"], r["a_bits"]): r[column] for r in self.rows}
        out = {}
        for name in layers:
            def s(w, a):
                if (name, w, a) not in value or value[name, w, a] is None:
                    raise ArqbenchError(f"the sensitivity profile {self.path} lacks {column} of layer '{name}' at "
                                        f"{w}/{a} bits; delete it to have it rebuilt")
                return value[name, w, a]
            if activations:
                base = s(MAX_BITS, MAX_BITS)
                out[name] = {(w, a): s(w, MAX_BITS) + s(MAX_BITS, a) - base for w in BITS for a in BITS}
            else:
                out[name] = {(w, MAX_BITS): s(w, MAX_BITS) for w in BITS}
        return out


def policy_loss(policy: Policy, sensitivity: dict[str, dict[tuple, float]]) -> float:
    """The additive prediction of what ``policy`` loses: the sum over the profiled layers of s_l(policy[l])."""
    total = 0.0
    for name, by_bits in sensitivity.items():
        bits = tuple(int(b) for b in policy[name])
        if bits not in by_bits:
            raise ValueError(f"layer '{name}' at {bits[0]}/{bits[1]} bits is outside the profile's choices "
                             f"(activations not profiled?)")
        total += by_bits[bits]
    return total


def profile(ctx: SearchContext, layers: list[str], activations: bool, metric: str, certifier: str,
            images: int = IMAGES, n: int | None = None, who: str = "sensitivity profile") -> Profile:
    """Measure (or read from the cache) the points of ``layers`` (module docstring); logs what it reused.
    Reports to ``ctx.ledger`` each point (and f's numbers) it read from the cache, at the seconds it took when
    measured, each point it measured, and the time it waited for another process measuring the profile.

    ``certifier``: the name of the certifier plugin that measures the ACR, built with the run's options for
    it (``ctx.protocol``), f being its reference on the search split (``ctx.reference()``); for metric
    ``disagreement`` it only sets the samples per image (its ``samples(config)``, as ``irs``'s N_p; n for a
    certifier without one). ``images``: search images per point; ``n``: the certifier's n (default
    ``samples(ctx.smoothing.n)``).
    """
    if metric not in METRICS:
        raise ArqbenchError(f"{who}: metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if not isinstance(images, int) or images < 1:
        raise ArqbenchError(f"{who}: images must be a positive integer, got {images!r}")
    unknown = sorted(set(layers) - {l.name for l in ctx.layers})
    if unknown:
        raise ArqbenchError(f"{who}: '{unknown[0]}' is not a quantizable layer of this model")

    config = replace(ctx.smoothing, n=n or samples(ctx.smoothing.n))
    measurer = ctx.protocol.create("certifier", certifier)
    subset = Subset(ctx.data.search, list(range(min(images, len(ctx.data.search)))))
    quantizer = ctx.protocol.quantizer
    key = {"what": "sensitivity", "version": VERSION, "reference": ctx.reference_key, "sigma": ctx.sigma,
           "seed": ctx.seed, "quantizer": quantizer,
           "quantizer_options": ctx.protocol.plugin_options("quantizer", quantizer), "metric": metric,
           "certifier": certifier, "certifier_options": ctx.protocol.plugin_options("certifier", certifier),
           "smoothing": {"n0": config.n0, "n": config.n, "alpha": config.alpha, "precision": config.precision},
           "images": len(subset), "search_split": len(ctx.data.search)}
    path = files.cache_path("sensitivity", key, ".json")
    # one process measures a profile at a time: a second one asking for the same points waits, then reuses them
    # (or, told not to wait, says so: a sweep runs its other cells meanwhile)
    try:
        with ctx.ledger.waiting():
            held = FileLock(path.with_name(f".{path.name}.lock")).acquire(timeout=-1 if ctx.wait_for_shared else 0)
    except Timeout:
        raise Busy(f"{who}: another process is measuring this profile") from None
    with held:  # released on leaving
        cached = _read(path, key)
        have = {(r["layer"], r["w_bits"], r["a_bits"]): r for r in cached.get("rows", [])}
        by_name = {l.name: l for l in ctx.layers}
        wanted = [(name, w, a) for name in layers for w, a in points(activations)]
        missing = [p for p in wanted if p not in have]

        start = time.perf_counter()
        ref = cached.get("reference")
        item = f"sensitivity/{path.stem}"  # the ledger's keys: f"{item}/reference", f"{item}/<layer>/<w>/<a>"
        for name, w, a in wanted:
            if (name, w, a) in have:
                ctx.ledger.reused(f"{item}/{name}/{w}/{a}", have[name, w, a].get("seconds", 0.0))
        if ref is not None:
            ctx.ledger.reused(f"{item}/reference", ref.get("seconds", 0.0))
        if missing:
            measure = _Measure(ctx, metric, measurer, config, subset)
            if ref is None:
                ref = {**measure(ctx.model), "seconds": time.perf_counter() - start}
                ctx.ledger.measured(f"{item}/reference")
            with ctx.progress(f"{who}: points", len(missing)) as advance:
                for name, w, a in missing:
                    layer, begun = by_name[name], time.perf_counter()
                    numbers = measure(ctx.quantize({name: (w, a)}))
                    have[name, w, a] = {"layer": name, "index": layer.index, "kind": layer.kind, "w_bits": w,
                                        "a_bits": a, **numbers, **_drops(ref, numbers),
                                        "seconds": time.perf_counter() - begun}
                    advance()
                    ctx.ledger.measured(f"{item}/{name}/{w}/{a}")
            order = {l.name: l.index for l in ctx.layers}
            rows = sorted(have.values(), key=lambda r: (order.get(r["layer"], -1), r["a_bits"] != MAX_BITS,
                                                        -r["w_bits"], -r["a_bits"]))
            files.write_json_atomic(path, {"key": key, "reference": ref, "rows": rows})
    seconds = time.perf_counter() - start
    result = Profile(key, path, ref, [have[p] for p in wanted], len(wanted) - len(missing), len(missing), seconds)
    if missing:
        info(f"{who}: measured {len(missing)} points ({len(set(layers))} layers) in {seconds:.1f}s"
             + (f", reused {result.reused} from the cache" if result.reused else "") + f"; cached in {path}")
    else:
        info(f"{who}: reused all {len(wanted)} points from the cache {path}")
    return result


class _Measure:
    """One model's numbers on the search split, as the module docstring defines them."""

    def __init__(self, ctx: SearchContext, metric: str, certifier, config, subset: Subset):
        self.ctx, self.metric, self.certifier, self.config, self.subset = ctx, metric, certifier, config, subset
        self.reference = ctx.reference()
        self.samples = certifier.samples(config) if hasattr(certifier, "samples") else config.n
        self._float: torch.Tensor | None = None

    def __call__(self, model) -> dict:
        ctx = self.ctx
        out = dict.fromkeys(MEASURES)
        out["clean_acc"] = ctx.accuracy(model)
        if self.metric == "acr":
            certs = self.certifier.certify(model, examples(self.subset), self.config, ctx.benchmark.num_classes,
                                           reference=self.reference)
            numbers = summarize(certs, ctx.benchmark.radii)
            out.update(acr=numbers["acr"], smoothed_acc=numbers["smoothed_acc"])
        else:
            if self._float is None:
                self._float = self._predictions(ctx.model)
            predictions = self._float if model is ctx.model else self._predictions(model)
            out["disagreement"] = (predictions != self._float).double().mean().item()
        return out

    def _predictions(self, model) -> torch.Tensor:
        device = self.ctx.device
        xs = torch.stack([x for _, x, _ in examples(self.subset)]).to(device)
        gens = generators(device, self.config.seed, range(len(xs)), ESTIMATION)
        return sample_predictions(model, xs, self.samples, self.config.sigma, self.config.batch_size, gens,
                                  self.config.precision)


def _drops(reference: dict, numbers: dict) -> dict:
    out = {}
    for name in ("acr", "smoothed_acc", "clean_acc"):
        a, b = reference.get(name), numbers.get(name)
        out[f"{name}_drop"] = None if a is None or b is None else a - b
    return out


def _read(path: Path, key: dict) -> dict:
    """The cache entry at ``path`` if it is one for ``key``; a corrupt entry is reported and rebuilt."""
    if not path.exists():
        return {}
    try:
        data = files.read_json(path, "sensitivity cache entry")
        if data.get("key") == json.loads(json.dumps(key, default=str)):
            return data
    except (ArqbenchError, AttributeError):
        pass
    from arqbench.console import warn

    warn(f"cache entry {path} is corrupt or from another setting; rebuilding it")
    return {}
