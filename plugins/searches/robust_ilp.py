"""Search ``robust-ilp``: HAWQ's integer linear program over a *robustness* sensitivity of each layer.

HAWQ ranks a layer's bit-widths by the Hessian of the base classifier's clean loss; what a smoothed model
certifies is another quantity. Here each layer's sensitivity is measured on the smoothed classifier itself:

1. For each free layer i and bit choice (weights b, and activations b when they are searched), quantize
   layer i alone (the rest float, the run's quantizer, the common calibration) and measure on the search
   split what the smoothed classifier loses against the float model f (``arqbench.search.sensitivity``):
   with ``metric=acr`` the drop in the ACR: by default (``profile=paired``) every point on the same replayed
   noise as f (f on N_p = irs.n_p x n samples per image, once; a point on the first ``samples`` = 100 of
   them), measuring each series from 2 bits up and skipping the bits above a point whose
   drop is within noise of zero (recorded as skipped, at 0); with ``profile=certified`` (the default before
   arqbench 0.3, 18x the time on digits-mobilenetv2) each point certified by ``irs`` on N_p samples per image
   against f's cached certification; ``metric=disagreement``: how often the quantized model's prediction
   on those samples differs from f's.
2. Assume the losses add up (across layers, and between a layer's weights and its activations:
   s_i(w, a) = s_i(w, 8) + s_i(8, a) - s_i(8, 8)), and choose bits by the ILP of ``arqbench.search.ilp``
   (pulp + CBC, tied layers, the run's cost model and budget) minimizing the summed sensitivity; among
   policies of equal summed sensitivity it prefers more bits (many points lose exactly 0 at 5-8 bits).

The additivity assumption is what makes the search cheap (one measurement per layer and bit choice instead of
one per policy); it ignores how layers' errors compound, so its quality is a measured number (the search's
reward fidelity), not a given. Cost (``paired``): images x N_p noisy forwards for f, then images x
``samples`` per measured point, at most free layers x bit choices (7; 13 with activations): ``estimate``
counts every point, an upper bound for ``--dry-run`` (skipping typically saves a tenth to a third). On
digits (5 free layers, activations, 100 images, N_p = 1,000) that is 0.75M forwards at most against the
``certified`` profile's 7.7M (f's certification at n = 10,000 included); ``benchmarks/profile_fidelity.py``
measures both side by side with HAWQ's search, and the policies and shipped ACR each gives. Measured points
are cached per base model and setting, like HAWQ's traces, and shared with ``arqbench profile``.

The result's search info holds ``objective``, the ILP's objective of the chosen policy: its summed
sensitivity, the loss the additivity assumption predicts (lower is better; as ``hawq``'s objective);
``sensitivity`` (per free layer and ``"w/a"`` choice, what the ILP minimized) and ``profile`` (the measured
points, drawn as a heatmap by ``arqbench leaderboard``). ``RobustILP.objective(ctx, policy)`` gives the same
objective for any policy (measuring the profile if it is not cached), e.g. to rank arbitrary policies.

Options (``--option robust-ilp.KEY=VALUE``): metric (acr | disagreement), profile (paired | certified),
samples (paired: samples per image per point, default 100), images (search images per point, default 100),
n (the certifier's n, default the run's, at most 10,000), certifier (default irs; its own options, e.g.
``--option irs.n_p=0.05`` or ``--np``, set how it measures), tie ("benchmark": ``ctx.tied``, "none", or a list of
lists of layer names; a policy that leaves a benchmark's tie untied is refused by the core).
"""

import time
from dataclasses import replace

from arqbench.contract import Cost, SearchResult
from arqbench.errors import ArqbenchError
from arqbench.hookspecs import hookimpl
from arqbench.toolkit import (
    PROFILE_IMAGES,
    PROFILE_METHODS,
    PROFILE_METRICS,
    PROFILE_SAMPLES,
    SensitivityProfile,
    fixed_layers,
    ilp_policy,
    policy_loss,
    profile_points,
    profile_samples,
    require_plugin,
    sensitivity_profile,
    tie_units,
)

NAME = "robust-ilp"


def bits_key(bits) -> str:
    return f"{bits[0]}/{bits[1]}"


class RobustILP:
    def __init__(self, metric: str = "acr", images: int = PROFILE_IMAGES, n: int | None = None,
                 certifier: str = "irs", tie="benchmark", profile: str = PROFILE_METHODS[0],
                 samples: int = PROFILE_SAMPLES):
        if metric not in PROFILE_METRICS:
            raise ArqbenchError(f"{NAME}.metric must be one of {', '.join(PROFILE_METRICS)}, got {metric!r}")
        if profile not in PROFILE_METHODS:
            raise ArqbenchError(f"{NAME}.profile must be one of {', '.join(PROFILE_METHODS)}, got {profile!r}")
        if not isinstance(samples, int) or samples < 1:
            raise ArqbenchError(f"{NAME}.samples must be a positive integer, got {samples!r}")
        if not isinstance(images, int) or images < 1:
            raise ArqbenchError(f"{NAME}.images must be a positive integer, got {images!r}")
        if n is not None and (not isinstance(n, int) or n < 1):
            raise ArqbenchError(f"{NAME}.n must be a positive integer, got {n!r}")
        if not (tie in ("benchmark", "none") or isinstance(tie, (list, tuple))
                and all(isinstance(g, (list, tuple)) and all(isinstance(x, str) for x in g) for g in tie)):
            raise ArqbenchError(f"{NAME}.tie must be 'benchmark', 'none' or a list of lists of layer names, "
                                f"got {tie!r}")
        require_plugin("certifier", certifier)
        self.metric, self.images, self.n, self.certifier, self.tie = metric, images, n, certifier, tie
        self.profile, self.samples = profile, samples

    def ties(self, ctx) -> list[list[str]]:
        if self.tie == "benchmark":
            return [list(g) for g in ctx.tied]
        return [] if self.tie == "none" else [list(g) for g in self.tie]

    def sensitivities(self, ctx) -> tuple[dict[str, dict[tuple, float]], SensitivityProfile, list[list[str]]]:
        """The ILP's table ``{free layer: {(w, a): s}}``, the profile it comes from, and the tie groups."""
        groups = self.ties(ctx)
        units, _ = tie_units(ctx.layers, ctx.fixed, groups, NAME)
        free = [name for unit in units for name in unit]
        measured = sensitivity_profile(ctx, free, ctx.search_activations, self.metric, self.certifier, self.images,
                                       self.n, f"{NAME}: sensitivity profile", self.profile, self.samples)
        return measured.sensitivity(free, ctx.search_activations, self.metric), measured, groups

    def objective(self, ctx, policy) -> float:
        """The ILP's objective of any ``policy``: the summed sensitivity of its free layers (lower is better)."""
        table, _, _ = self.sensitivities(ctx)
        return policy_loss(policy, table)

    def estimate(self, work) -> Cost:
        """An upper bound. ``paired``: f on N_p samples per search image, then ``samples`` per image for every
        (free layer, bit choice) point, as if none were skipped (skipping, by monotonicity in bits, saves some).
        ``certified``: f's certification on the search images (cached by the certifier after the first run),
        then one certification per point. All of it is cached per base model, seed and setting and shared by
        every budget's cell, the ILP itself costs nothing."""
        certifier = work.protocol.create("certifier", self.certifier)
        config = replace(work.smoothing, n=self.n or profile_samples(work.smoothing.n))
        images = min(self.images, work.search_images)
        free = [l.name for l in work.layers if l.name not in fixed_layers(work.layers, work.protocol.keep_ends)]
        activations = work.protocol.search_activations
        measured = len(free) * len(profile_points(activations))
        if self.profile == "paired":
            float_samples = certifier.samples(config) if callable(getattr(certifier, "samples", None)) else config.n
            profile = images * (float_samples + measured * min(self.samples, float_samples))
        else:
            profile = images * (config.n0 + config.n) + (1 + measured) * work.certify_forwards(images, certifier,
                                                                                                config)
        key = (NAME, config.seed, self.metric, self.certifier, images, config.n, activations, tuple(free),
               self.profile, self.samples)
        return Cost(shared={key: profile})

    def search(self, ctx) -> SearchResult:
        start = time.perf_counter()
        table, measured, groups = self.sensitivities(ctx)
        profile_s = time.perf_counter() - start
        policy, loss = ilp_policy(ctx.layers, ctx.fixed, groups, table, ctx.cost_fraction, ctx.budget,
                                  ctx.search_activations, f"cost model '{ctx.protocol.cost_model}'", NAME,
                                  prefer_bits=True)
        info = {
            "metric": self.metric,
            "objective": loss,
            "sensitivity": {name: {bits_key(b): v for b, v in by_bits.items()} for name, by_bits in table.items()},
            "cost_fraction": ctx.cost_fraction(policy),
            "ties": groups,
            "profile": measured.rows,
            "profile_reference": measured.reference,
            "profile_cache": {"path": str(measured.path), "reused": measured.reused, "computed": measured.computed,
                              "skipped": measured.skipped, "forwards": measured.forwards},
            "profile_s": profile_s,  # waits for another process's profile included (the cell's timing has them apart)
            "settings": {"metric": self.metric, "profile": self.profile, "samples": self.samples,
                         "images": measured.key["images"],
                         "n": measured.key["smoothing"]["n"], "certifier": self.certifier,
                         "certifier_options": measured.key["certifier_options"]},
        }
        return SearchResult(policy, info)


@hookimpl
def register_search(register):
    register(NAME, RobustILP)
