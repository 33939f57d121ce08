"""Bit policies: ``{layer_name: (w_bits, a_bits)}``, their validation, files, and the budget "action wall"."""

from pathlib import Path
from typing import Callable, Iterable

from arqbench.errors import ArqbenchError, InfeasibleBudget
from arqbench.files import check_json, read_json
from arqbench.contract import MAX_BITS, MIN_BITS, LayerInfo, Policy

FLOAT_BITS = 32


def fixed_layers(layers: list[LayerInfo], keep_ends: bool = True) -> set[str]:
    """Layers held at 8/8 bits: the first and last by default (DESIGN §4)."""
    return {layers[0].name, layers[-1].name} if keep_ends else set()


def float_policy(layers: list[LayerInfo]) -> Policy:
    return {layer.name: (FLOAT_BITS, FLOAT_BITS) for layer in layers}


def uniform_policy(layers: list[LayerInfo], w_bits: int, a_bits: int, fixed: Iterable[str] = ()) -> Policy:
    fixed = set(fixed)
    return {l.name: (MAX_BITS, MAX_BITS) if l.name in fixed else (w_bits, a_bits) for l in layers}


def validate(policy: Policy, layers: list[LayerInfo], where: str = "policy",
             error: type[ArqbenchError] = ArqbenchError) -> Policy:
    """Check a policy names exactly the model's layers with bits in [2, 8]; return it normalised. A mistake is
    ``error`` with ``where`` leading its one line."""
    expected = [l.name for l in layers]
    missing = [n for n in expected if n not in policy]
    extra = [n for n in policy if n not in set(expected)]
    if missing or extra:
        raise error(
            f"{where}: the policy does not fit this model: missing layers {missing[:3]}, unknown layers {extra[:3]}; "
            f"a policy names every quantizable layer of this model and nothing else (was it made for another model?)"
        )
    out = {}
    for name in expected:
        bits = policy[name]
        try:
            w, a = (int(bits[0]), int(bits[1]))
        except (TypeError, ValueError, IndexError, KeyError):
            raise error(f"{where}: layer '{name}' has bits {bits!r}; expected [w_bits, a_bits]") from None
        if not (MIN_BITS <= w <= MAX_BITS and MIN_BITS <= a <= MAX_BITS):
            raise error(f"{where}: layer '{name}' has bits ({w}, {a}); each must be in [{MIN_BITS}, {MAX_BITS}]")
        out[name] = (w, a)
    return out


def protocol_breach(policy: Policy, fixed: Iterable[str], tied: list[list[str]], search_activations: bool) -> str:
    """The first rule of the protocol (DESIGN §4) a searched policy breaks, or "": ``fixed`` layers at (8, 8),
    activation bits 8 unless searched, each group of ``tied`` layers at one precision."""
    for name in fixed:
        if name in policy and policy[name] != (MAX_BITS, MAX_BITS):
            return f"layer '{name}' is held at ({MAX_BITS}, {MAX_BITS}) (ctx.fixed), got {policy[name]}"
    if not search_activations:
        for name, (_, a) in policy.items():
            if a != MAX_BITS:
                return (f"layer '{name}' has activation bits {a}; they stay {MAX_BITS} unless the run searches them "
                        f"(ctx.search_activations)")
    for group in tied:
        members = [name for name in group if name in policy]
        for name in members[1:]:
            if policy[name] != policy[members[0]]:
                return (f"tied layers {members[0]} {policy[members[0]]} and {name} {policy[name]} must share one "
                        f"precision (ctx.tied)")
    return ""


def tie(policy: Policy, tied: list[list[str]], fixed: Iterable[str] = ()) -> Policy:
    """``policy`` with each tied group at one precision: (8, 8) where the group holds a fixed layer, else the
    lowest weight and the lowest activation bits among its members (so the cost does not rise)."""
    policy, fixed = dict(policy), set(fixed)
    for group in tied:
        members = [name for name in group if name in policy]
        if not members:
            continue
        if fixed & set(members):
            bits = (MAX_BITS, MAX_BITS)
        else:
            bits = (min(policy[n][0] for n in members), min(policy[n][1] for n in members))
        policy.update({name: bits for name in members})
    return policy


BITS = {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}
POLICY_SCHEMA = {"type": "object", "additionalProperties": BITS}  # {layer: [w_bits, a_bits]}


def load(path: Path) -> Policy:
    """Read a policy from a policy file (``{"policy": {layer: [w, a]}}`` or the bare map) or a result file."""
    data = read_json(path, "policy file")
    raw = data.get("policy", data) if isinstance(data, dict) else data
    if raw is None:
        raise ArqbenchError(f"{path} holds no policy (an fp32 or failed result); choose a quantized row")
    check_json(raw, POLICY_SCHEMA, f"policy file {path} is not a policy",
               '{"policy": {layer: [w_bits, a_bits]}} or a result file of a quantized row')
    return {str(k): (int(v[0]), int(v[1])) for k, v in raw.items()}


def fit_to_budget(
    policy: Policy,
    layers: list[LayerInfo],
    cost_fraction: Callable[[Policy], float],
    budget: float,
    fixed: Iterable[str] = (),
    search_activations: bool = False,
    tied: list[list[str]] = (),
) -> Policy:
    """HAQ's action wall: tie the ``tied`` groups (``tie``), then sweep the free layers from last to first,
    lowering each by one bit (activation bits first when they are searched, then weight bits; a tied group as
    one, at its last member), until ``cost_fraction <= budget``.

    Raises InfeasibleBudget when every free layer is at the minimum and the cost still exceeds the budget.
    """
    fixed = set(fixed)
    policy = tie(policy, tied, fixed)
    group_of = {name: [n for n in group if n in policy] for group in tied for name in group}
    units, seen = [], set()
    for layer in reversed(layers):
        if layer.name not in fixed and layer.name not in seen:
            unit = group_of.get(layer.name, [layer.name])
            if fixed & set(unit):
                continue
            seen.update(unit)
            units.append(unit)
    slots = [(unit, which) for unit in units for which in ((1, 0) if search_activations else (0,))]
    while cost_fraction(policy) > budget:
        lowered = False
        for unit, which in slots:
            bits = list(policy[unit[0]])
            if bits[which] > MIN_BITS:
                bits[which] -= 1
                policy.update({name: (bits[0], bits[1]) for name in unit})
                lowered = True
                if cost_fraction(policy) <= budget:
                    return policy
        if not lowered:
            raise InfeasibleBudget(
                f"budget {budget:.4%} of float cost cannot be met: the cheapest allowed policy costs "
                f"{cost_fraction(policy):.4%}" + ("" if search_activations else "; try --search-activations")
            )
    return policy


def cheapest_policy(layers: list[LayerInfo], fixed: Iterable[str], search_activations: bool) -> Policy:
    """The lowest-cost policy the protocol allows: 2-bit weights (and activations if searched)."""
    return uniform_policy(layers, MIN_BITS, MIN_BITS if search_activations else MAX_BITS, fixed)
