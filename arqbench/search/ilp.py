"""Bits by an integer linear program (HAWQ-V3): one precision per unit, least total sensitivity, within budget.

One-hot binaries x_{u,c} per free unit u (a layer, or a group of tied layers that must share one precision)
and choice c (a weight/activation bit pair), minimize sum_u sum_c Omega_u(c) x_{u,c} subject to

    cost(base) + sum_u sum_c m_u(c) x_{u,c} <= budget,    sum_c x_{u,c} = 1,

where Omega_u(c) sums its layers' sensitivities and m_u(c) = cost(base with u at c) - cost(base) is the
unit's marginal cost from the run's cost model (base: every layer at 8/8 bits). This is exact only for a
cost model that is additive over layers (bitops and size are); additivity is checked on sampled points of
the choice grid and a non-additive cost model is refused. Solved by CBC as pulp ships it.

A choice is the weight bits b (activations b too when searched, else 8: HAWQ-V3's a = w) or an explicit
(w_bits, a_bits) pair. Fixed layers stay at 8/8; a tie group containing a fixed layer is held at 8/8.
With ``prefer_bits``, ties are broken lexicographically by a second program: among the policies whose total
sensitivity is within ``TIE`` (relative to the largest |Omega|) of the least, the one with the most bits
(sum of w + a over units) within the budget.
"""

import random
import warnings

import pulp

from arqbench.errors import ArqbenchError, InfeasibleBudget
from arqbench.files import scratch
from arqbench.quantization.policy import MAX_BITS, MIN_BITS, Policy

CHOICES = tuple(range(MIN_BITS, MAX_BITS + 1))
ADDITIVITY_SAMPLES = 32
TIE = 1e-7  # total sensitivities this close (relative to the largest |Omega|) are ties for ``prefer_bits``


def tie_units(layers, fixed, groups, method: str = "search") -> tuple[list[list[str]], set[str]]:
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
            raise ArqbenchError(f"{method}: tied layer '{unknown[0]}' is not a quantizable layer of this model "
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
               cost_name: str = "cost model", method: str = "search", prefer_bits: bool = False) -> tuple[Policy, float]:
    """The policy minimizing total Omega under the budget (module docstring), and its objective value.

    ``omega``: ``{layer: {choice: Omega}}`` for every layer of a free unit, each with the same choices;
    ``cost_fraction(policy)``: the run's cost as a fraction of float. Raises InfeasibleBudget when even the
    cheapest choice of every unit is over budget.
    """
    units, held = tie_units(layers, fixed, groups, method)
    base = {l.name: (MAX_BITS, MAX_BITS) for l in layers}
    choices = list(omega[units[0][0]]) if units else list(CHOICES)

    def pair(choice) -> tuple[int, int]:
        if isinstance(choice, tuple):
            return choice
        return (choice, choice) if search_activations else (choice, MAX_BITS)

    def assign(choice: dict[int, object]) -> Policy:
        policy = dict(base)
        for u, c in choice.items():
            policy.update({n: pair(c) for n in units[u]})
        return policy

    base_cost = cost_fraction(base)
    marginal = [{c: cost_fraction(assign({u: c})) - base_cost for c in choices} for u in range(len(units))]
    unit_omega = [{c: sum(omega[n][c] for n in unit) for c in choices} for unit in units]

    rng = random.Random(0)
    grid = [{u: c for u in range(len(units))} for c in choices]
    grid += [{u: rng.choice(choices) for u in range(len(units))} for _ in range(ADDITIVITY_SAMPLES)]
    for choice in grid:
        actual = cost_fraction(assign(choice))
        predicted = base_cost + sum(marginal[u][c] for u, c in choice.items())
        if abs(actual - predicted) > 1e-9 * max(1.0, abs(actual)):
            raise ArqbenchError(f"{method} needs a cost model that is additive over layers; {cost_name} is not "
                                f"(a policy costs {actual:.6g} of float, the sum of its per-layer costs "
                                f"{predicted:.6g})")

    cheapest = cost_fraction(assign({u: min(choices, key=marginal[u].get) for u in range(len(units))}))
    if cheapest > budget:
        raise InfeasibleBudget(f"budget {budget:.4%} of float cost cannot be met: the cheapest policy {method} may "
                               f"choose costs {cheapest:.4%}" + ("" if search_activations else
                                                                  "; try --search-activations"))
    if not units:
        return dict(base), 0.0

    scale = max((abs(v) for o in unit_omega for v in o.values()), default=0.0) or 1.0
    normalised = [{c: v / scale for c, v in o.items()} for o in unit_omega]
    slack = min(1e-9, (budget - cheapest) / 2)  # keeps CBC's feasibility tolerance from admitting a policy a hair over
    for _ in range(3):
        limit = budget - base_cost - slack
        choice = _solve(normalised, marginal, limit, method)
        if choice is None:
            raise InfeasibleBudget(f"budget {budget:.4%} of float cost: the {method} ILP has no solution")
        if prefer_bits:
            least = sum(normalised[u][c] for u, c in choice.items())
            fewer = [{c: -sum(pair(c)) for c in choices} for _ in units]
            choice = _solve(fewer, marginal, limit, method, cap=(normalised, least + TIE)) or choice
        policy = assign(choice)
        over = cost_fraction(policy) - budget
        if over <= 0:
            return policy, sum(unit_omega[u][c] for u, c in choice.items())
        slack += over
    raise InfeasibleBudget(f"budget {budget:.4%} of float cost: the {method} ILP found no policy within it")


def _solve(objective: list[dict], cost: list[dict], limit: float, name: str = "ilp",
           cap: tuple[list[dict], float] | None = None) -> dict[int, object] | None:
    """argmin sum objective_u(c) x_uc s.t. sum_c x_uc = 1, sum cost_u(c) x_uc <= limit (and, with ``cap = (g,
    bound)``, sum g_u(c) x_uc <= bound), x binary; CBC as pulp ships it, its files in a scratch folder of
    ``$ARQBENCH_HOME`` (``files.scratch``), its PuLP-4.0 deprecation warnings silenced. None when infeasible."""
    choices = list(objective[0])
    units = range(len(objective))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        problem = pulp.LpProblem(name.replace("-", "_"), pulp.LpMinimize)
        x = {(u, k): pulp.LpVariable(f"x_{u}_{k}", cat="Binary") for u in units for k in range(len(choices))}
        problem += pulp.lpSum(objective[u][choices[k]] * x[u, k] for u, k in x)
        for u in units:
            problem += pulp.lpSum(x[u, k] for k in range(len(choices))) == 1
        problem += pulp.lpSum(cost[u][choices[k]] * x[u, k] for u, k in x) <= limit
        if cap is not None:
            problem += pulp.lpSum(cap[0][u][choices[k]] * x[u, k] for u, k in x) <= cap[1]
        solver = pulp.PULP_CBC_CMD(msg=False)
        with scratch("ilp-") as folder:  # gone even if CBC fails or ^C
            solver.tmpDir = str(folder)  # pulp deletes its files only after a successful solve
            status = problem.solve(solver)
    if pulp.LpStatus[status] != "Optimal":
        return None
    return {u: choices[max(range(len(choices)), key=lambda k: x[u, k].value() or 0.0)] for u in units}
