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


def validate(policy: Policy, layers: list[LayerInfo], where: str = "policy") -> Policy:
    """Check a policy names exactly the model's layers with bits in [2, 8]; return it normalised."""
    expected = [l.name for l in layers]
    missing = [n for n in expected if n not in policy]
    extra = [n for n in policy if n not in set(expected)]
    if missing or extra:
        raise ArqbenchError(
            f"{where} does not fit this model: missing layers {missing[:3]}, unknown layers {extra[:3]}; "
            f"it was made for another model"
        )
    out = {}
    for name in expected:
        bits = policy[name]
        try:
            w, a = (int(bits[0]), int(bits[1]))
        except (TypeError, ValueError, IndexError):
            raise ArqbenchError(f"{where}: layer '{name}' has bits {bits!r}; expected [w_bits, a_bits]") from None
        if not (MIN_BITS <= w <= MAX_BITS and MIN_BITS <= a <= MAX_BITS):
            raise ArqbenchError(f"{where}: layer '{name}' has bits ({w}, {a}); each must be in [{MIN_BITS}, {MAX_BITS}]")
        out[name] = (w, a)
    return out


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
) -> Policy:
    """HAQ's action wall: sweep the free layers from last to first, lowering each by one bit
    (activation bits first when they are searched, then weight bits), until ``cost_fraction <= budget``.

    Raises InfeasibleBudget when every free layer is at the minimum and the cost still exceeds the budget.
    """
    policy = dict(policy)
    fixed = set(fixed)
    slots = [(l.name, which) for l in reversed(layers) if l.name not in fixed
             for which in ((1, 0) if search_activations else (0,))]
    while cost_fraction(policy) > budget:
        lowered = False
        for name, which in slots:
            bits = list(policy[name])
            if bits[which] > MIN_BITS:
                bits[which] -= 1
                policy[name] = (bits[0], bits[1])
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
