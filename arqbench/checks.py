"""What a plugin hands back, held to the contract before anything is ranked (DESIGN §3, at use).

A breach is a ``ContractBreach``: one line naming the plugin and the rule it broke, e.g. "search 'boom' (plugin
'boom-plugin') broke the contract: tied layers net.block2.conv1 (3, 8) and net.block2.shortcut.0 (8, 8) must
share one precision".
"""

import copy
from typing import Any, Callable, Sequence

import torch
from torch import nn

from arqbench import plugins
from arqbench.contract import Policy, SearchResult
from arqbench.errors import ArqbenchError
from arqbench.quantization import policy as policies
from arqbench.quantization.layers import LayerInfo

BUDGET_SLACK = 1e-9  # relative: a cost fraction this far above the budget is rounding, not a breach


class ContractBreach(ArqbenchError):
    """What a plugin returned (or did to what it was given) breaks its kind's Protocol in ``arqbench.contract``."""


def label(kind: str, name: str) -> str:
    """``search 'boom' (plugin 'boom-plugin')``: a registered plugin as messages name it."""
    entries = plugins.registries().get(kind, {})
    plugin = f" (plugin '{entries[name].plugin}')" if name in entries else ""
    return f"{kind.replace('_', ' ')} '{name}'{plugin}"


def fingerprint(model: nn.Module) -> tuple:
    """A cheap summary of every parameter and buffer (names, shapes, sum, absolute sum, sum of squares), computed
    where the model lives: a change of any value in place changes it (all but surely)."""
    state = model.state_dict(keep_vars=False)
    names = tuple((key, tuple(value.shape)) for key, value in state.items())
    with torch.no_grad():
        sums = [torch.stack([t.sum(), t.abs().sum(), (t * t).sum()]) for t in
                (value.detach().double() for value in state.values() if value.numel())]
    return names, tuple(torch.cat(sums).cpu().tolist()) if sums else ()


def quantize(quantizer: Any, name: str, model: nn.Module, policy: Policy,
             calibration: Sequence[torch.Tensor]) -> nn.Module:
    """``quantizer.quantize`` of a copy of ``model``, refused unless it returns a model and leaves the copy it was
    given as it was (so a quantizer that rounds in place is caught, and the run's float model stays intact)."""
    given = copy.deepcopy(model)
    before = fingerprint(given)
    quantized = quantizer.quantize(given, policy, calibration)
    if not isinstance(quantized, nn.Module):
        raise ContractBreach(f"{label('quantizer', name)} broke the contract: quantize returned a "
                             f"{type(quantized).__name__}, not a torch.nn.Module (a quantized copy of the model)")
    if quantized is given or fingerprint(given) != before:
        raise ContractBreach(f"{label('quantizer', name)} broke the contract: quantize changed the float model it "
                             f"was given; quantize a copy (toolkit.quantized_copy copies it for you)")
    return quantized


def search_result(found: Any, name: str, layers: list[LayerInfo], fixed: set[str], tied: list[list[str]],
                  search_activations: bool, cost_fraction: Callable[[Policy], float], budget: float) -> tuple[Policy, dict]:
    """A search's ``SearchResult`` as (policy, info), refused unless the policy names every quantizable layer with
    bits in [MIN_BITS, MAX_BITS], holds ``fixed`` layers at (8, 8) and activations at 8 unless searched, gives each
    tied group one precision and meets the budget."""
    where = f"{label('search', name)} broke the contract"
    if not isinstance(found, SearchResult) and not (hasattr(found, "policy") and hasattr(found, "info")):
        raise ContractBreach(f"{where}: search returned a {type(found).__name__}, not a contract.SearchResult")
    if not isinstance(found.policy, dict) or not isinstance(found.info, dict):
        raise ContractBreach(f"{where}: SearchResult.policy must be a dict {{layer: (w_bits, a_bits)}} and .info "
                             f"a dict, got {type(found.policy).__name__} and {type(found.info).__name__}")
    policy = policies.validate(found.policy, layers, where, ContractBreach)
    breach = policies.protocol_breach(policy, fixed, tied, search_activations)
    if breach:
        raise ContractBreach(f"{where}: {breach}")
    cost = cost_fraction(policy)
    if cost > budget * (1 + BUDGET_SLACK):
        raise ContractBreach(f"{where}: its policy costs {cost:.4%} of the float model, over the budget {budget:.4%}; "
                             f"fit it with ctx.within_budget(policy) or raise InfeasibleBudget")
    return policy, found.info
