"""Per-layer robustness sensitivity: what the smoothed classifier loses when one layer alone is quantized.

For a quantizable layer i and bits (w, a), f_{i,w,a} is the float base model f with only layer i quantized
by the run's quantizer (weights at w bits, the layer's input activation at a bits, the common calibration
batches); every other layer stays float (the quantizer gets a policy naming layer i alone). Measured on the
search split (held out of the training data, never the certification subset):

- metric ``acr``, method ``paired`` (the default: far cheaper than ``certified``, with ILP policies as good, as
  ``benchmarks/profile_fidelity.py`` measures; its figures: leaderboards/profile-fidelity/, README): the ACR and smoothed accuracy IRS would certify for the
  smoothed f_{i,w,a} against f on the first ``images`` search images, estimated on one set of noise shared
  by f and every point. f is sampled once, on N_p = the certifier's ``samples`` (``irs``: n_p x n) replayed
  noisy copies of each image (IRS's estimation stream): cA = its most frequent class, pA_lower = the
  Clopper-Pearson lower bound (alpha) of cA's count. A point is sampled on the first S = ``SAMPLES`` (100)
  of the same copies only; with d its disagreements with f there, its radius on the image is

      R = sigma Phi^-1(pA_lower - zeta(d)),   zeta(d) = Clopper-Pearson upper bound (``ALPHA_ZETA``) of d / S,

  0 where that is below 1/2 or cA is not the label (IRS's incremental certificate, with S samples and no
  from-scratch fallback); f's own numbers are the same formula at d = 0, so a model predicting as f on every
  replayed sample loses exactly 0, and the drop grows with the disagreements. The noise is common to all
  points, so their differences are estimated paired, and S is a tenth of what ``certified`` spends.
  Monotonicity in bits: each series (weights at w = 2..8, activations at a = 2..7) is measured from 2 bits
  up; once a point's loss is within noise of zero (|mean| <= ``Z`` x its standard error over the images:
  a handful of images with a disagreement at most), the points above it are not measured but recorded as
  ``skipped``, at 0 on the metric (the value the ILP uses) and None elsewhere;
- metric ``acr``, method ``certified`` (the default before arqbench 0.3; many times the cost): ACR and smoothed accuracy of
  the smoothed f_{i,w,a} certified by the given certifier with f as the reference (``irs``: N_p = n_p x n
  replayed noisy samples per image against f's cached certification, or N_p fresh ones where it
  re-certifies from scratch); f itself is measured by the same certifier with the same settings and seeds
  (with ``irs``: f against itself, zero disagreements), so both sides share one estimator and its noise,
  and a layer left at float loses exactly 0;
- metric ``disagreement``: the fraction of the noisy samples per image (``paired``: S; ``certified``: N_p)
  on which f_{i,w,a} and f predict differently (``paired`` skips above a point within noise of zero too);
- always ``clean_acc``: top-1 of the base classifier on the whole search split;

with ``X_drop = X(f) - X(f_{i,w,a})`` for each (disagreement is a loss already: 0 for f).

Points: (b, 8) for b in 2..8 (the weights), and (8, b) for b in 2..7 (the activations) when asked for. A
policy's sensitivity is *predicted* from them by additivity: the loss of a policy is the sum of its layers'
single-layer losses, and a layer's loss at (w, a) is s(w, 8) + s(8, a) - s(8, 8). Quantization errors of
different layers interact (they compound, or cancel), so this is an assumption whose quality (how well the
prediction ranks policies as their certified ACR does) has to be measured, not taken for granted.

Cost (noisy forward passes; each point also pays one quantize-and-calibrate pass and a clean pass over the
search split): ``paired``: images x (N_p + S x measured points), at most images x (N_p + S x points) (what
robust-ilp's dry-run estimate counts); ``certified``: images x (n0 + n) for f's certification (cached by
``irs``) plus images x N_p (n0 + N_p where IRS falls back) per point. ``benchmarks/profile_fidelity.py``
measures both side by side (their cost, their rank correlation over the points, and the policies and shipped
ACR the ILP gets from each); S = ``SAMPLES`` was chosen by how well points ranked by their disagreement at S
agree with ``certified``. ``arq``'s predicted radius (p = pA_f + (k_q - k_f) / S through CERTIFY's bound at
n) was tried as the paired estimate and rejected: near zero it is dominated by which few images happen to
disagree. The measured figures are in leaderboards/profile-fidelity/ and the README, not here.

Measured points are cached under ``$ARQBENCH_HOME/sensitivity/<key>.json``, keyed by everything that changes
them (base model, sigma, seed, the quantizer and the certifier with their options, the certification
settings, images, metric, method and its settings); a request computes only the points the cache lacks.
"""

import json
import time
from contextlib import contextmanager
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
from arqbench.smoothing.core import (ESTIMATION, SmoothingConfig, certified_radius, generators, lower_confidence_bound,
                                    sample_predictions, upper_confidence_bound)
from arqbench.smoothing.metrics import summarize

VERSION = 2  # bump when what a point measures changes (2: the paired method, skipped points)
METRICS = ("acr", "disagreement")
METHODS = ("paired", "certified")  # how a point is measured (module docstring); the first is the default
SAMPLES = 100  # paired: noisy samples per image per point (module docstring: how this was chosen)
ALPHA_ZETA = 0.001  # paired: level of the disagreement bound (irs's default alpha_zeta)
Z = 3.0  # paired: a point is within noise of zero when |mean drop| <= Z x its standard error over the images
IMAGES = 100  # search images certified per point (module docstring: the cost)
MAX_N = 10_000  # the certifier's n per point unless given: the run's n, at most this (a ranking, not a certificate)
MEASURES = ("acr", "smoothed_acc", "clean_acc", "disagreement")
BITS = tuple(range(MIN_BITS, MAX_BITS + 1))
__all__ = ["profile", "Profile", "policy_loss", "samples", "points", "METRICS", "METHODS", "MEASURES", "IMAGES",
           "SAMPLES", "MAX_N"]  # the toolkit exports these by name (``toolkit.sensitivity_profile``, ...)


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
    skipped: int = 0  # points of this request not measured: monotonicity in bits set them (module docstring)
    forwards: int = 0  # noisy forward passes spent by this request (f's included)

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
            images: int = IMAGES, n: int | None = None, who: str = "sensitivity profile", method: str = METHODS[0],
            point_samples: int = SAMPLES) -> Profile:
    """Measure (or read from the cache) the points of ``layers`` (module docstring); logs what it reused.
    Reports to ``ctx.ledger`` each point (and f's numbers) it read from the cache, at the seconds it took when
    measured, each point it measured, and the time it waited for another process measuring the profile.

    ``method``: ``paired`` (default) or ``certified`` (module docstring). ``certifier``: the name of the
    certifier plugin built with the run's options for it (``ctx.protocol``), f being its reference on the
    search split (``ctx.reference()``): ``certified`` measures each point's ACR with it; otherwise it only sets
    the samples per image (its ``samples(config)``, as ``irs``'s N_p; n for a certifier without one), which
    ``paired`` spends on f alone. ``images``: search images per point; ``n``: the certifier's n (default
    ``samples(ctx.smoothing.n)``), which ``paired`` also predicts radii at; ``point_samples``: ``paired``'s
    samples per image per point.
    """
    _check_request(ctx, layers, metric, method, images, point_samples, who)
    config = replace(ctx.smoothing, n=n or samples(ctx.smoothing.n))
    measurer = ctx.protocol.create("certifier", certifier)
    subset = Subset(ctx.data.search, list(range(min(images, len(ctx.data.search)))))
    key = _cache_key(ctx, metric, certifier, config, subset, method, point_samples)
    path = files.cache_path("sensitivity", key, ".json")
    wanted = [(name, w, a) for name in layers for w, a in points(activations)]
    with _only_measurer(ctx, path, who):
        cached = _read(path, key)
        have = {(r["layer"], r["w_bits"], r["a_bits"]): r for r in cached.get("rows", [])}
        missing = [p for p in wanted if p not in have]
        start = time.perf_counter()
        ref = cached.get("reference")
        item = f"sensitivity/{path.stem}"  # the ledger's keys: f"{item}/reference", f"{item}/<layer>/<w>/<a>"
        _report_reused(ctx, item, [p for p in wanted if p in have], have, ref)
        forwards = 0
        if missing:
            if method == "paired":
                measure = _Paired(ctx, metric, config, subset, _samples_of(measurer, config), point_samples)
            else:
                measure = _Measure(ctx, metric, measurer, config, subset)
            if ref is None:
                ref = {**measure(ctx.model), "seconds": time.perf_counter() - start}
                ctx.ledger.measured(f"{item}/reference")
            _measure_points(ctx, measure, metric, method, ref, missing, have, item, who)
            forwards = measure.forwards
            _write(path, key, ref, have, ctx.layers)
    seconds = time.perf_counter() - start
    skipped = sum(bool(have[p].get("skipped")) for p in missing)
    result = Profile(key, path, ref, [have[p] for p in wanted], len(wanted) - len(missing),
                     len(missing) - skipped, seconds, skipped, forwards)
    _log(result, who, len(set(layers)), len(wanted))
    return result


def _check_request(ctx: SearchContext, layers: list[str], metric: str, method: str, images, point_samples,
                   who: str) -> None:
    """Refuse, in one line naming ``who``, a metric, method, image count, sample count or layer that is wrong."""
    if metric not in METRICS:
        raise ArqbenchError(f"{who}: metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if method not in METHODS:
        raise ArqbenchError(f"{who}: method must be one of {', '.join(METHODS)}, got {method!r}")
    if not isinstance(images, int) or images < 1:
        raise ArqbenchError(f"{who}: images must be a positive integer, got {images!r}")
    if not isinstance(point_samples, int) or point_samples < 1:
        raise ArqbenchError(f"{who}: samples must be a positive integer, got {point_samples!r}")
    unknown = sorted(set(layers) - {l.name for l in ctx.layers})
    if unknown:
        raise ArqbenchError(f"{who}: '{unknown[0]}' is not a quantizable layer of this model")


def _cache_key(ctx: SearchContext, metric: str, certifier: str, config: SmoothingConfig, subset: Subset,
               method: str, point_samples: int) -> dict:
    """Everything that changes a measured point (module docstring, last paragraph)."""
    quantizer = ctx.protocol.quantizer
    key = {"what": "sensitivity", "version": VERSION, "method": method, "reference": ctx.reference_key,
           "sigma": ctx.sigma, "seed": ctx.seed, "quantizer": quantizer,
           "quantizer_options": ctx.protocol.plugin_options("quantizer", quantizer), "metric": metric,
           "certifier": certifier, "certifier_options": ctx.protocol.plugin_options("certifier", certifier),
           "smoothing": {"n0": config.n0, "n": config.n, "alpha": config.alpha, "precision": config.precision},
           "images": len(subset), "search_split": len(ctx.data.search)}
    if method == "paired":
        key["paired"] = {"samples": point_samples, "z": Z, "alpha_zeta": ALPHA_ZETA}
    return key


@contextmanager
def _only_measurer(ctx: SearchContext, path: Path, who: str):
    """Hold the profile's lock: one process measures a profile at a time; a second one asking for the same
    points waits (the wait reported to ``ctx.ledger``), then reuses them, or, told not to wait, raises ``Busy``
    (a sweep runs its other cells meanwhile)."""
    try:
        with ctx.ledger.waiting():
            held = FileLock(path.with_name(f".{path.name}.lock")).acquire(timeout=-1 if ctx.wait_for_shared else 0)
    except Timeout:
        raise Busy(f"{who}: another process is measuring this profile") from None
    with held:  # released on leaving
        yield


def _report_reused(ctx: SearchContext, item: str, reused: list[tuple], have: dict, ref: dict | None) -> None:
    """Each cached point read (and f's numbers), at the seconds it took when measured."""
    for name, w, a in reused:
        ctx.ledger.reused(f"{item}/{name}/{w}/{a}", have[name, w, a].get("seconds", 0.0))
    if ref is not None:
        ctx.ledger.reused(f"{item}/reference", ref.get("seconds", 0.0))


def _measure_points(ctx: SearchContext, measure, metric: str, method: str, ref: dict, missing: list[tuple],
                    have: dict, item: str, who: str) -> None:
    """Measure each ``missing`` point into ``have``, in order (from 2 bits up, so ``paired`` can skip a point
    above one within noise of zero)."""
    by_name = {l.name: l for l in ctx.layers}
    with ctx.progress(f"{who}: points", len(missing)) as advance:
        for name, w, a in missing:
            layer, begun = by_name[name], time.perf_counter()
            row = {"layer": name, "index": layer.index, "kind": layer.kind, "w_bits": w, "a_bits": a}
            below = _below(have, name, w, a)
            if method == "paired" and below is not None and below.get("within_noise"):
                # monotone in bits: no more loss than the point below, itself within noise of zero
                row.update({**dict.fromkeys(MEASURES), **_drops({}, {}), "skipped": True,
                            "within_noise": True, "seconds": 0.0})
                row[_column(metric)] = 0.0
            else:
                numbers = measure(ctx.quantize({name: (w, a)}))
                row.update({**numbers, **_drops(ref, numbers), "seconds": time.perf_counter() - begun})
                ctx.ledger.measured(f"{item}/{name}/{w}/{a}")
            have[name, w, a] = row
            advance()


def _write(path: Path, key: dict, ref: dict, have: dict, layers) -> None:
    """The cache file: every point known, in network order, weights before activations, high bits first."""
    order = {l.name: l.index for l in layers}
    rows = sorted(have.values(), key=lambda r: (order.get(r["layer"], -1), r["a_bits"] != MAX_BITS,
                                                -r["w_bits"], -r["a_bits"]))
    files.write_json_atomic(path, {"key": key, "reference": ref, "rows": rows})


def _log(result: Profile, who: str, layers: int, wanted: int) -> None:
    if result.computed or result.skipped:
        info(f"{who}: measured {result.computed} points ({layers} layers) in {result.seconds:.1f}s"
             + (f", skipped {result.skipped} (monotone in bits)" if result.skipped else "")
             + (f", reused {result.reused} from the cache" if result.reused else "") + f"; cached in {result.path}")
    else:
        info(f"{who}: reused all {wanted} points from the cache {result.path}")


def _column(metric: str) -> str:
    return "acr_drop" if metric == "acr" else "disagreement"


def _below(have: dict, name: str, w: int, a: int) -> dict | None:
    """The point one bit lower in the same series (weights at a = 8, or activations at w = 8), if measured."""
    if a == MAX_BITS and w > MIN_BITS:
        return have.get((name, w - 1, a))
    if w == MAX_BITS and MIN_BITS < a < MAX_BITS:
        return have.get((name, w, a - 1))
    return None


def _samples_of(certifier, config) -> int:
    return certifier.samples(config) if hasattr(certifier, "samples") else config.n


class _Paired:
    """Every point against f on the same noise (module docstring): f's predictions once, on ``float_samples``
    replayed samples per image; a model's on the first ``samples`` of them."""

    def __init__(self, ctx: SearchContext, metric: str, config, subset: Subset, float_samples: int, samples: int):
        self.ctx, self.metric, self.config = ctx, metric, config
        self.samples = min(samples, float_samples)
        self.xs = torch.stack([x for _, x, _ in examples(subset)]).to(ctx.device)
        self.indices = [index for index, _, _ in examples(subset)]
        labels = torch.tensor([label for _, _, label in examples(subset)])
        f = self._predictions(ctx.model, float_samples)
        c_a = torch.mode(f, dim=1).values
        self.correct = (c_a == labels).tolist()
        self.p_lower = [lower_confidence_bound(int(k), float_samples, config.alpha)
                        for k in (f == c_a[:, None]).sum(dim=1).tolist()]
        self.f_first = f[:, :self.samples]
        self.forwards = len(self.xs) * float_samples
        self.f_radii = self.radii(torch.zeros(len(self.xs), dtype=torch.long))

    def _predictions(self, model, num: int) -> torch.Tensor:
        config = self.config
        gens = generators(self.ctx.device, config.seed, self.indices, ESTIMATION)
        return sample_predictions(model, self.xs, num, config.sigma, config.batch_size, gens,
                                  config.precision).cpu()

    def radii(self, disagreements: torch.Tensor) -> torch.Tensor:
        """Per image, R = sigma Phi^-1(pA_lower - zeta), zeta the upper bound on the disagreement rate from the
        ``disagreements`` among ``samples``; 0 where that is below 1/2 or f's class is not the label."""
        out = []
        for d, p_lower, correct in zip(disagreements.tolist(), self.p_lower, self.correct):
            p = p_lower - upper_confidence_bound(int(d), self.samples, ALPHA_ZETA)
            out.append(certified_radius(self.config.sigma, p) if p >= 0.5 and correct else 0.0)
        return torch.tensor(out, dtype=torch.double)

    def __call__(self, model) -> dict:
        """The model's numbers, with the standard error of the metric's loss over the images and whether that
        loss is within noise of zero."""
        out = dict.fromkeys(MEASURES)
        out["clean_acc"] = self.ctx.accuracy(model)
        if model is self.ctx.model:
            predictions = self.f_first
        else:
            predictions = self._predictions(model, self.samples)
            self.forwards += len(self.xs) * self.samples
        differ = (predictions != self.f_first).sum(dim=1)
        if self.metric == "acr":
            radii = self.radii(differ)
            out.update(acr=radii.mean().item(), smoothed_acc=(radii > 0).double().mean().item())
            loss = self.f_radii - radii
        else:
            loss = differ.double() / self.samples
        error = loss.std().item() / len(loss) ** 0.5 if len(loss) > 1 else 0.0
        out.update(disagreement=differ.sum().item() / differ.numel() / self.samples, drop_se=error,
                   within_noise=abs(loss.mean().item()) <= Z * error)
        return out


class _Measure:
    """One model's numbers on the search split, as the module docstring defines them."""

    def __init__(self, ctx: SearchContext, metric: str, certifier, config, subset: Subset):
        self.ctx, self.metric, self.certifier, self.config, self.subset = ctx, metric, certifier, config, subset
        self.reference = ctx.reference()
        self.samples = _samples_of(certifier, config)
        self._float: torch.Tensor | None = None
        self.counter = [0]

    @property
    def forwards(self) -> int:
        return self.counter[0]

    def __call__(self, model) -> dict:
        ctx = self.ctx
        out = dict.fromkeys(MEASURES)
        out["clean_acc"] = ctx.accuracy(model)
        if self.metric == "acr":
            with _counting(self.counter, model, ctx.model):
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
        with _counting(self.counter, model):
            return sample_predictions(model, xs, self.samples, self.config.sigma, self.config.batch_size, gens,
                                      self.config.precision)


@contextmanager
def _counting(counter: list, *models):
    """Adds to ``counter[0]`` the inputs every forward pass of ``models`` sees meanwhile."""
    def hook(module, inputs):
        counter[0] += len(inputs[0])

    handles = [m.register_forward_pre_hook(hook) for m in {id(m): m for m in models}.values()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


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
