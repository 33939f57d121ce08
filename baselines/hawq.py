"""Search ``hawq``: Hessian-aware bits (HAWQ-V2 sensitivity, HAWQ-V3 integer linear program).

1. Per quantizable layer i, Tr(H_i) of the noisy training loss by Hutchinson's estimator
   (``arqbench.baselines.hessian``), cached per (base model, sigma, estimator settings).
2. Sensitivity of b weight bits, with Q_b the run's quantizer and n_i the layer's weight count:

       Omega_i(b) = Tr(H_i) / n_i * ||Q_b(W_i) - W_i||^2

3. Bits by the integer linear program of ``arqbench.search.ilp`` (pulp + CBC): one bit-width per free unit (a
   layer, or a group of tied layers that must share one precision), minimizing sum_u Omega_u(b_u) under the
   run's cost model (additive over layers: bitops and size are) and budget.

Fixed layers stay at 8/8; a tie group containing a fixed layer is held at 8/8 as a whole. Activation bits
stay 8, unless activations are searched: then each layer's activation bits equal its weight bits
(a = w, as in HAWQ-V3's INT4/INT8 layers), so Omega (weights only) still ranks the choices and the lower
activation bits only lower the cost.

Options (``--option hawq.KEY=VALUE``): batches, batch_size, tol, max_iter, seed (default: the run's seed),
tie ("benchmark": the benchmark's tied layers, ``ctx.tied``; "none"; or a list of lists of layer names: a
policy that leaves a benchmark's tie untied breaks the protocol and is refused by the core).
"""

import time

import torch

from arqbench.contract import Cost, SearchResult
from arqbench.errors import ArqbenchError
from arqbench.hookspecs import hookimpl
from arqbench.toolkit import ILP_CHOICES as CHOICES
from arqbench.toolkit import tie_units  # noqa: F401 (part of hawq's API)
from arqbench.toolkit import cache_path, ilp_policy, torch_load_cached, torch_save_atomic, warn

from .hessian import layer_traces, noisy_labelled_batches

TRACE_VERSION = 2  # bump when the estimator (or what its cache entry holds) changes


def sensitivities(model, layers, traces: dict[str, float], quantizer) -> dict[str, dict[int, float]]:
    """Omega_i(b) = Tr(H_i) / n_i * ||Q_b(W_i) - W_i||^2 for every layer and candidate bit-width."""
    out = {}
    with torch.no_grad():
        for layer in layers:
            w = model.get_submodule(layer.name).weight.detach()
            scale = traces[layer.name] / w.numel()
            out[layer.name] = {b: scale * (quantizer.quantize_weight(w, b) - w).pow(2).sum().item() for b in CHOICES}
    return out


class Hawq:
    def __init__(self, batches: int = 4, batch_size: int = 128, tol: float = 1e-3, max_iter: int = 100,
                 seed: int | None = None, tie="benchmark"):
        for name, value in (("batches", batches), ("batch_size", batch_size), ("max_iter", max_iter)):
            if not isinstance(value, int) or value < 1:
                raise ArqbenchError(f"hawq.{name} must be a positive integer, got {value!r}")
        if seed is not None and not isinstance(seed, int):
            raise ArqbenchError(f"hawq.seed must be an integer, got {seed!r}")
        if not isinstance(tol, (int, float)) or not tol > 0:
            raise ArqbenchError(f"hawq.tol must be a positive number, got {tol!r}")
        if not (tie in ("benchmark", "none") or isinstance(tie, (list, tuple))
                and all(isinstance(g, (list, tuple)) and all(isinstance(n, str) for n in g) for g in tie)):
            raise ArqbenchError(f"hawq.tie must be 'benchmark', 'none' or a list of lists of layer names, got {tie!r}")
        self.batches, self.batch_size, self.tol, self.max_iter = batches, batch_size, float(tol), max_iter
        self.seed, self.tie = seed, tie

    def estimate(self, work) -> Cost:
        """At most ``max_iter`` probes, each a gradient and one Hessian-vector product per layer (about a backward
        pass, two forwards) over every batch; cached per base model and seed, so shared by every budget's cell."""
        traces = self.max_iter * self.batches * self.batch_size * (work.train_cost + 2 * len(work.layers))
        seed = work.smoothing.seed if self.seed is None else self.seed
        key = ("hawq", seed, self.batches, self.batch_size, self.tol, self.max_iter)
        return Cost(shared={key: traces})

    def ties(self, ctx) -> list[list[str]]:
        if self.tie == "benchmark":
            return [list(g) for g in ctx.tied]
        return [] if self.tie == "none" else [list(g) for g in self.tie]

    def traces(self, ctx) -> tuple[dict[str, dict], float, bool]:
        """Per-layer traces (cached on disk), the seconds computing them took, and whether they came from
        the cache (then those seconds were spent by an earlier run, and are reported to ``ctx.ledger``)."""
        seed = ctx.seed if self.seed is None else self.seed
        names = [l.name for l in ctx.layers]
        key = {"what": "hutchinson-traces", "version": TRACE_VERSION, "reference": ctx.reference_key,
               "sigma": ctx.sigma, "batches": self.batches, "batch_size": self.batch_size, "tol": self.tol,
               "max_iter": self.max_iter, "seed": seed, "layers": names}
        path = cache_path("hessian", key)
        cached = torch_load_cached(path)
        if isinstance(cached, dict) and set(cached.get("traces", {})) == set(names):
            ctx.ledger.reused(f"hessian/{path.stem}", float(cached["seconds"]))  # counts in the search's cost
            return cached["traces"], float(cached["seconds"]), True
        start = time.perf_counter()
        batches = noisy_labelled_batches(ctx.data.finetune, ctx.sigma, self.batches, self.batch_size, seed)
        traces = layer_traces(ctx.model, names, batches, self.tol, self.max_iter, seed)
        seconds = time.perf_counter() - start
        torch_save_atomic(path, {"traces": traces, "seconds": seconds})
        return traces, seconds, False

    def search(self, ctx) -> SearchResult:
        traces, trace_s, cached = self.traces(ctx)
        trace = {n: float(t["trace"]) for n, t in traces.items()}
        negative = [n for n, t in trace.items() if t <= 0]
        if negative:
            warn(f"hawq: non-positive Hessian trace for {', '.join(negative)}; the base model is not at a "
                 f"minimum there and those layers' sensitivities rank low")
        omega = sensitivities(ctx.model, ctx.layers, trace, ctx.quantizer)
        groups = self.ties(ctx)
        cost_name = f"cost model '{ctx.protocol.cost_model}'"
        policy, objective = ilp_policy(ctx.layers, ctx.fixed, groups, omega, ctx.cost_fraction, ctx.budget,
                                       ctx.search_activations, cost_name, "hawq")
        info = {
            "traces": trace,
            "trace_iterations": {n: int(t["iterations"]) for n, t in traces.items()},
            "params": {l.name: l.params for l in ctx.layers},
            "omega": {n: {str(b): v for b, v in o.items()} for n, o in omega.items()},
            "objective": objective,
            "cost_fraction": ctx.cost_fraction(policy),
            "ties": groups,
            "activations": "a = w" if ctx.search_activations else "8",
            "trace_cached": cached,
            "trace_s": trace_s,
            "settings": {"batches": self.batches, "batch_size": self.batch_size, "tol": self.tol,
                         "max_iter": self.max_iter, "seed": ctx.seed if self.seed is None else self.seed},
        }
        return SearchResult(policy, info)


@hookimpl
def register_search(register):
    register("hawq", Hawq)
