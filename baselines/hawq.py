"""Search ``hawq``: Hessian-aware bits (HAWQ-V2 sensitivity, HAWQ-V3 integer linear program).

1. Per quantizable layer i, Tr(H_i) of the noisy training loss by Hutchinson's estimator
   (``arqbench.baselines.hessian``), cached per (base model, sigma, estimator settings).
2. Sensitivity of b weight bits, with Q_b the run's quantizer and n_i the layer's weight count:

       Omega_i(b) = Tr(H_i) / n_i * ||Q_b(W_i) - W_i||^2

3. Bits by an ILP (pulp + CBC): one-hot binaries x_{u,b} per free unit u (a layer, or a group of tied layers
   that must share one precision), minimize sum_u sum_b Omega_u(b) x_{u,b} subject to
   cost(base) + sum_u sum_b c_u(b) x_{u,b} <= budget, where c_u(b) = cost(base with u at b) - cost(base) is
   the unit's marginal cost from the run's cost model (base: every layer at 8/8 bits). This is exact only for
   a cost model that is additive over layers (bitops and size are); additivity is checked on sampled points
   of the candidate grid and a non-additive cost model is refused.

Fixed layers stay at 8/8; a tie group containing a fixed layer is held at 8/8 as a whole. Activation bits
stay 8, unless activations are searched: then each layer's activation bits equal its weight bits
(a = w, as in HAWQ-V3's INT4/INT8 layers), so Omega (weights only) still ranks the choices and the lower
activation bits only lower the cost.

Options (``--option hawq.KEY=VALUE``): batches, batch_size, tol, max_iter, seed (default: the run's seed),
tie ("benchmark": the benchmark's tied layers; "none"; or a list of lists of layer names).
"""

import random
import time
import warnings

import pulp
import torch

from arqbench import files
from arqbench.console import warn
from arqbench.errors import ArqbenchError, InfeasibleBudget
from arqbench.hookspecs import hookimpl
from arqbench.quantization.policy import MAX_BITS, MIN_BITS, Policy
from arqbench.search.context import SearchResult

from .hessian import layer_traces, noisy_labelled_batches

CHOICES = tuple(range(MIN_BITS, MAX_BITS + 1))
TRACE_VERSION = 2  # bump when the estimator (or what its cache entry holds) changes
ADDITIVITY_SAMPLES = 32


def sensitivities(model, layers, traces: dict[str, float], quantizer) -> dict[str, dict[int, float]]:
    """Omega_i(b) = Tr(H_i) / n_i * ||Q_b(W_i) - W_i||^2 for every layer and candidate bit-width."""
    out = {}
    with torch.no_grad():
        for layer in layers:
            w = model.get_submodule(layer.name).weight.detach()
            scale = traces[layer.name] / w.numel()
            out[layer.name] = {b: scale * (quantizer.quantize_weight(w, b) - w).pow(2).sum().item() for b in CHOICES}
    return out


def tie_units(layers, fixed, groups) -> tuple[list[list[str]], set[str]]:
    """Merge overlapping tie groups; return the free units (groups and single layers, in layer order) and the
    layers held at 8/8 (the fixed ones plus every group that contains one)."""
    names = [l.name for l in layers]
    owner = {n: n for n in names}

    def root(n):
        while owner[n] != n:
            n = owner[n]
        return n

    for group in groups:
        unknown = [n for n in group if n not in owner]
        if unknown:
            raise ArqbenchError(f"hawq: tied layer '{unknown[0]}' is not a quantizable layer of this model "
                                f"(layers: {', '.join(names[:6])}{', ...' if len(names) > 6 else ''})")
        for n in group[1:]:
            owner[root(n)] = root(group[0])
    members: dict[str, list[str]] = {}
    for n in names:
        members.setdefault(root(n), []).append(n)
    held = set(fixed)
    units = []
    for unit in members.values():
        if held & set(unit):
            held |= set(unit)
        else:
            units.append(unit)
    return units, held


def ilp_policy(layers, fixed, groups, omega, cost_fraction, budget: float, search_activations: bool,
               cost_name: str = "cost model") -> tuple[Policy, float]:
    """The policy minimizing total Omega under the budget (module docstring), and its objective value.

    ``omega``: ``{layer: {bits: Omega}}``; ``cost_fraction(policy)``: the run's cost as a fraction of float.
    Raises InfeasibleBudget when even the cheapest choice of every unit is over budget.
    """
    pair = (lambda b: (b, b)) if search_activations else (lambda b: (b, MAX_BITS))
    units, held = tie_units(layers, fixed, groups)
    base = {l.name: (MAX_BITS, MAX_BITS) for l in layers}

    def assign(choice: dict[int, int]) -> Policy:
        policy = dict(base)
        for u, b in choice.items():
            policy.update({n: pair(b) for n in units[u]})
        return policy

    base_cost = cost_fraction(base)
    marginal = [{b: cost_fraction(assign({u: b})) - base_cost for b in CHOICES} for u in range(len(units))]
    unit_omega = [{b: sum(omega[n][b] for n in unit) for b in CHOICES} for unit in units]

    rng = random.Random(0)
    grid = [{u: b for u in range(len(units))} for b in CHOICES]
    grid += [{u: rng.choice(CHOICES) for u in range(len(units))} for _ in range(ADDITIVITY_SAMPLES)]
    for choice in grid:
        actual = cost_fraction(assign(choice))
        predicted = base_cost + sum(marginal[u][b] for u, b in choice.items())
        if abs(actual - predicted) > 1e-9 * max(1.0, abs(actual)):
            raise ArqbenchError(f"hawq needs a cost model that is additive over layers; {cost_name} is not "
                                f"(a policy costs {actual:.6g} of float, the sum of its per-layer costs "
                                f"{predicted:.6g})")

    cheapest = cost_fraction(assign({u: min(CHOICES, key=marginal[u].get) for u in range(len(units))}))
    if cheapest > budget:
        raise InfeasibleBudget(f"budget {budget:.4%} of float cost cannot be met: the cheapest policy hawq may "
                               f"choose costs {cheapest:.4%}" + ("" if search_activations else
                                                                  "; try --search-activations"))
    if not units:
        return dict(base), 0.0

    scale = max((abs(v) for o in unit_omega for v in o.values()), default=0.0) or 1.0
    slack = min(1e-9, (budget - cheapest) / 2)  # keeps CBC's feasibility tolerance from admitting a policy a hair over
    for _ in range(3):
        choice = _solve(unit_omega, marginal, budget - base_cost - slack, scale)
        if choice is None:
            raise InfeasibleBudget(f"budget {budget:.4%} of float cost: the hawq ILP has no solution")
        policy = assign(choice)
        over = cost_fraction(policy) - budget
        if over <= 0:
            return policy, sum(unit_omega[u][b] for u, b in choice.items())
        slack += over
    raise InfeasibleBudget(f"budget {budget:.4%} of float cost: the hawq ILP found no policy within it")


def _solve(omega: list[dict], cost: list[dict], limit: float, scale: float) -> dict[int, int] | None:
    """argmin sum Omega_u(b) x_ub s.t. sum_b x_ub = 1, sum cost_u(b) x_ub <= limit, x binary (CBC as pulp
    ships it; pulp's PuLP-4.0 deprecation warnings are silenced). None when infeasible."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        problem = pulp.LpProblem("hawq", pulp.LpMinimize)
        x = {(u, b): pulp.LpVariable(f"x_{u}_{b}", cat="Binary") for u in range(len(omega)) for b in CHOICES}
        problem += pulp.lpSum(omega[u][b] / scale * x[u, b] for u, b in x)
        for u in range(len(omega)):
            problem += pulp.lpSum(x[u, b] for b in CHOICES) == 1
        problem += pulp.lpSum(cost[u][b] * x[u, b] for u, b in x) <= limit
        status = problem.solve(pulp.PULP_CBC_CMD(msg=False))
    if pulp.LpStatus[status] != "Optimal":
        return None
    return {u: max(CHOICES, key=lambda b: x[u, b].value() or 0.0) for u in range(len(omega))}


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

    def estimate(self, work) -> float:
        """At most ``max_iter`` probes, each a gradient and one Hessian-vector product per layer (about a backward
        pass, two forwards) over every batch; cached per base model, so a later run costs nothing."""
        return self.max_iter * self.batches * self.batch_size * (work.train_cost + 2 * len(work.layers))

    def ties(self, ctx) -> list[list[str]]:
        if self.tie == "benchmark":
            return [list(g) for g in ctx.benchmark.tied_layers(ctx.model)]
        return [] if self.tie == "none" else [list(g) for g in self.tie]

    def traces(self, ctx) -> tuple[dict[str, dict], float, bool]:
        """Per-layer traces (cached on disk), the seconds computing them took, and whether they came from
        the cache (then those seconds were spent by an earlier run)."""
        seed = ctx.seed if self.seed is None else self.seed
        names = [l.name for l in ctx.layers]
        key = {"what": "hutchinson-traces", "version": TRACE_VERSION, "reference": ctx.reference_key,
               "sigma": ctx.sigma, "batches": self.batches, "batch_size": self.batch_size, "tol": self.tol,
               "max_iter": self.max_iter, "seed": seed, "layers": names}
        path = files.cache_path("hessian", key)
        cached = files.torch_load_cached(path)
        if isinstance(cached, dict) and set(cached.get("traces", {})) == set(names):
            return cached["traces"], float(cached["seconds"]), True
        start = time.perf_counter()
        batches = noisy_labelled_batches(ctx.data.finetune, ctx.sigma, self.batches, self.batch_size, seed)
        traces = layer_traces(ctx.model, names, batches, self.tol, self.max_iter, seed)
        seconds = time.perf_counter() - start
        files.torch_save_atomic(path, {"traces": traces, "seconds": seconds})
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
                                       ctx.search_activations, cost_name)
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
            "reused_s": trace_s if cached else 0.0,  # cached work counts in the search's cost
            "settings": {"batches": self.batches, "batch_size": self.batch_size, "tol": self.tol,
                         "max_iter": self.max_iter, "seed": ctx.seed if self.seed is None else self.seed},
        }
        return SearchResult(policy, info)


@hookimpl
def register_search(register):
    register("hawq", Hawq)
