"""Search ``robust-ilp``: HAWQ's integer linear program over a *robustness* sensitivity of each layer.

HAWQ ranks a layer's bit-widths by the Hessian of the base classifier's clean loss; what a smoothed model
certifies is another quantity. Here each layer's sensitivity is measured on the smoothed classifier itself:

1. For each free layer i and bit choice (weights b, and activations b when they are searched), quantize
   layer i alone (the rest float, the run's quantizer, the common calibration) and measure on the search
   split what the smoothed classifier loses against the float model f (``arqbench.search.sensitivity``):
   by default (``metric=acr``) the drop in ACR, certified incrementally by ``irs`` against f's cached
   certification (n_p = ``n_p`` x n replayed samples per image, f measured by the same estimator);
   ``metric=disagreement``: how often the quantized model's prediction on those noisy samples differs from f's.
2. Assume the losses add up (across layers, and between a layer's weights and its activations:
   s_i(w, a) = s_i(w, 8) + s_i(8, a) - s_i(8, 8)), and choose bits by the ILP of ``arqbench.search.ilp``
   (pulp + CBC, tied layers, the run's cost model and budget) minimizing the summed sensitivity; among
   policies of equal summed sensitivity it prefers more bits (many points lose exactly 0 at 5-8 bits).

The additivity assumption is what makes the search cheap (one measurement per layer and bit choice instead of
one per policy); it ignores how layers' errors compound, so its quality is a measured number (the search's
reward fidelity), not a given. Cost: free layers x bit choices (7; 13 with activations) x images x n_p noisy
forwards, plus f's certification once (images x n, cached by ``irs``); on digits with the defaults (5 free
layers, 100 images, n_p = 0.1 x 2000) 35 points, or 65 with activations: 21-29 s of search on 2 CPU cores
from a cold cache, f's certification included, and milliseconds once cached. Measured points are cached
per base model and setting, like HAWQ's traces, and shared with ``arqbench profile``.

The result's search info holds ``objective`` (minus the summed sensitivity of the chosen policy: higher is
better), ``sensitivity`` (per free layer and ``"w/a"`` choice, what the ILP minimized) and ``profile`` (the
measured points, drawn as a heatmap by ``arqbench leaderboard``); ``objective(policy, info)`` scores any
policy from them.

Options (``--option robust-ilp.KEY=VALUE``): metric (acr | disagreement), images (search images per point,
default 100), n (the certifier's n, default the run's), n_p (incremental samples as a fraction of n,
default the run's --np), certifier (default irs), tie ("benchmark", "none", or a list of lists of layer names).
"""

import time

from arqbench import plugins
from arqbench.errors import ArqbenchError
from arqbench.hookspecs import hookimpl
from arqbench.search import sensitivity
from arqbench.search.context import SearchResult
from arqbench.search.ilp import ilp_policy, tie_units

NAME = "robust-ilp"


def bits_key(bits) -> str:
    return f"{bits[0]}/{bits[1]}"


def objective(policy, info: dict) -> float:
    """The robust-ilp objective of any policy: minus its summed sensitivity, from a result's search ``info``."""
    table = {layer: {tuple(int(b) for b in key.split("/")): value for key, value in choices.items()}
             for layer, choices in info["sensitivity"].items()}
    return -sensitivity.policy_loss(policy, table)


class RobustILP:
    def __init__(self, metric: str = "acr", images: int = sensitivity.IMAGES, n: int | None = None,
                 n_p: float | None = None, certifier: str = "irs", tie="benchmark"):
        if metric not in sensitivity.METRICS:
            raise ArqbenchError(f"{NAME}.metric must be one of {', '.join(sensitivity.METRICS)}, got {metric!r}")
        if not isinstance(images, int) or images < 1:
            raise ArqbenchError(f"{NAME}.images must be a positive integer, got {images!r}")
        if n is not None and (not isinstance(n, int) or n < 1):
            raise ArqbenchError(f"{NAME}.n must be a positive integer, got {n!r}")
        if n_p is not None and (not isinstance(n_p, (int, float)) or not 0 < n_p <= 1):
            raise ArqbenchError(f"{NAME}.n_p must be a fraction of n in (0, 1], got {n_p!r}")
        if not (tie in ("benchmark", "none") or isinstance(tie, (list, tuple))
                and all(isinstance(g, (list, tuple)) and all(isinstance(x, str) for x in g) for g in tie)):
            raise ArqbenchError(f"{NAME}.tie must be 'benchmark', 'none' or a list of lists of layer names, "
                                f"got {tie!r}")
        plugins.get("certifier", certifier)
        self.metric, self.images, self.n, self.n_p, self.certifier, self.tie = metric, images, n, n_p, certifier, tie

    def ties(self, ctx) -> list[list[str]]:
        if self.tie == "benchmark":
            return [list(g) for g in ctx.benchmark.tied_layers(ctx.model)]
        return [] if self.tie == "none" else [list(g) for g in self.tie]

    def search(self, ctx) -> SearchResult:
        start = time.perf_counter()
        groups = self.ties(ctx)
        units, _ = tie_units(ctx.layers, ctx.fixed, groups, NAME)
        free = [name for unit in units for name in unit]
        measured = sensitivity.profile(
            ctx, free, ctx.search_activations, self.metric,
            plugins.create("certifier", self.certifier) if self.metric == "acr" else None, self.certifier,
            self.images, self.n, self.n_p, who=f"{NAME}: sensitivity profile")
        profile_s = time.perf_counter() - start
        table = measured.sensitivity(free, ctx.search_activations, self.metric)
        cost_name = f"cost model '{ctx.settings.get('cost_model', type(ctx.cost_model).__name__)}'"
        policy, loss = ilp_policy(ctx.layers, ctx.fixed, groups, table, ctx.cost_fraction, ctx.budget,
                                  ctx.search_activations, cost_name, NAME, prefer_bits=True)
        info = {
            "metric": self.metric,
            "objective": -loss,
            "sensitivity": {name: {bits_key(b): v for b, v in by_bits.items()} for name, by_bits in table.items()},
            "cost_fraction": ctx.cost_fraction(policy),
            "ties": groups,
            "profile": measured.rows,
            "profile_reference": measured.reference,
            "profile_cache": {"path": str(measured.path), "reused": measured.reused, "computed": measured.computed},
            "profile_s": profile_s,
            "settings": {"metric": self.metric, "images": measured.key["images"],
                         "n": measured.key["smoothing"]["n"], "n_p": measured.key["n_p"],
                         "certifier": measured.key["certifier"]},
        }
        return SearchResult(policy, info)


@hookimpl
def register_search(register):
    register(NAME, RobustILP)
