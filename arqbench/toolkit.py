"""What plugins may share: the one module of helpers a plugin imports besides ``arqbench.contract``,
``arqbench.hookspecs`` and ``arqbench.errors``. Everything here is kept working across minor versions (a change
bumps ``arqbench.PLUGIN_API``); everything else in arqbench may move without notice.

Certifying (noise is the protocol's: seeded per example and phase, so certificates replay sample for sample):

- ``certify_subset``: certify every image of a ``Subset`` with a certifier, with a progress bar
- ``certify_many``: Cohen's CERTIFY (n0 samples choose cA, n fresh ones bound pA) for a group of examples
- ``batched``: lists of up to ``size`` consecutive items (groups of examples)
- ``group_size``: how many examples to certify together so a forward holds about ``batch_size`` samples
- ``sample_predictions``: the base classifier's class on ``num`` seeded noisy copies of each input
- ``generators``: each example's noise stream for a phase (``generator``: one example's)
- ``generator``: one example's noise stream for a phase
- ``SELECTION``, ``ESTIMATION``, ``PREDICTION``, ``RESELECTION``, ``REESTIMATION``: the noise phases (streams)
- ``NOISE_SCHEME``: changes whenever the samples a seed gives change (key caches of predictions on it)
- ``lower_confidence_bound``: one-sided Clopper-Pearson lower bound on a binomial proportion
- ``upper_confidence_bound``: one-sided Clopper-Pearson upper bound on a binomial proportion
- ``certified_radius``: R = sigma * Phi^-1(pA_lower)
- ``summarize``: accuracy, ACR and certified accuracy at radii of a list of certificates

Searching:

- ``AgentSettings``: the HAQ agent's settings (episodes, warm-up, exploration, networks): a search subclasses it
- ``rl_search``: HAQ's DDPG agent over its bit-allocation environment, rewarded by your ``reward(policy)``; with
  ``rescore_top`` > 0 it ships the best of its top candidates re-scored by your ``rescore(policy)`` (your reward on
  a larger, independent sample)
- ``candidate_steps``: a search's ``finetune_steps`` option (steps, or ``"final"``: the candidate is the shipped
  model) as ``ctx.candidate`` takes it, refused in one line when it is neither
- ``BitAllocationEnv``: the environment (one episode = one pass over the layers, with the action wall)
- ``ilp_policy``: the bits minimising a per-layer sensitivity table under the budget, by integer programming
- ``tie_units``: the layer groups the ILP assigns together (tied layers share a precision)
- ``ILP_CHOICES``: the bit-widths the ILP chooses from
- ``sensitivity_profile``: each free layer quantized alone at each bit-width: what the smoothed classifier loses
- ``SensitivityProfile``: what ``sensitivity_profile`` returns (its rows, and ``sensitivity(...)``: the ILP's table)
- ``policy_loss``: a policy's summed sensitivity from such a table (what robust-ilp minimises)
- ``profile_samples``: the certifier's n per profile point by default, given the run's n
- ``profile_points``: the (w_bits, a_bits) points a profile measures per layer
- ``PROFILE_METRICS``, ``PROFILE_METHODS``, ``PROFILE_IMAGES``, ``PROFILE_SAMPLES``: a profile's metrics, ways of
  measuring (the first is the default), search images per point and paired samples per image
- ``fixed_layers``: the layers held at 8/8 bits (first and last, unless ``keep_ends`` is off)
- ``uniform_policy``: every layer at the same bits, fixed layers at 8/8
- ``require_plugin``: refuse (one line naming the registered ones) an option naming a plugin that does not exist

Quantizing:

- ``quantized_copy``: a copy of a model with the Conv2d/Linear layers a policy names wrapped and calibrated
- ``QuantWrapper``: a base class for those wrappers (override ``quantize_input`` and ``quantized_weight``)

Benchmarks:

- ``Normalization``: a per-channel (mean, std) input normalisation
- ``Normalized``: a network with its normalisation as its first layer (noise is added before it)
- ``permutation``: a fixed pseudo-random order of ``length`` items (stable train/test splits)
- ``loader``: a DataLoader over a dataset with the protocol's seeding

Caches and messages (under ``$ARQBENCH_HOME``, the only place a plugin writes):

- ``home``: the cache root, ``$ARQBENCH_HOME`` or the user's cache directory
- ``key_hash``: a short stable hash of everything that changes a cached item
- ``cache_path``: where the item of ``kind`` with ``key`` is cached
- ``torch_save_atomic``: write a file all at once (no half-written cache entry, even when killed)
- ``torch_load_cached``: read a cache entry, or None when missing (a corrupt one is removed and rebuilt)
- ``warn``: a one-line warning to the user
- ``moved_modules``: say where a plugin package's modules moved: importing an old name fails naming the new import
"""

import warnings

from arqbench import plugins as _plugins
from arqbench._moved import moved_modules
from arqbench.console import warn
from arqbench.files import cache_path, home, key_hash, torch_load_cached, torch_save_atomic
from arqbench.models.data import loader, permutation
from arqbench.models.normalize import Normalization, Normalized
from arqbench.quantization.policy import fixed_layers, uniform_policy
from arqbench.quantization.wrapping import QuantWrapper, quantized_copy
from arqbench.search import sensitivity as _sensitivity
from arqbench.search.sensitivity import IMAGES as PROFILE_IMAGES
from arqbench.search.sensitivity import METHODS as PROFILE_METHODS
from arqbench.search.sensitivity import METRICS as PROFILE_METRICS
from arqbench.search.sensitivity import SAMPLES as PROFILE_SAMPLES
from arqbench.search.sensitivity import Profile as SensitivityProfile
from arqbench.search.sensitivity import points as profile_points
from arqbench.search.sensitivity import policy_loss
from arqbench.search.sensitivity import profile as sensitivity_profile
from arqbench.search.sensitivity import samples as profile_samples
from arqbench.search.agent import AgentSettings, candidate_steps, rl_search
from arqbench.search.bit_env import BitAllocationEnv
from arqbench.search.ilp import CHOICES as ILP_CHOICES
from arqbench.search.ilp import ilp_policy, tie_units
from arqbench.smoothing.certification import certify_subset
from arqbench.smoothing.core import (
    ESTIMATION,
    NOISE_SCHEME,
    PREDICTION,
    REESTIMATION,
    RESELECTION,
    SELECTION,
    batched,
    certified_radius,
    certify_many,
    generator,
    generators,
    group_size,
    lower_confidence_bound,
    sample_predictions,
    upper_confidence_bound,
)
from arqbench.smoothing.metrics import summarize

__all__ = [
    "certify_subset", "certify_many", "batched", "group_size", "sample_predictions", "generators", "generator",
    "SELECTION", "ESTIMATION", "PREDICTION", "RESELECTION", "REESTIMATION", "NOISE_SCHEME",
    "lower_confidence_bound", "upper_confidence_bound", "certified_radius", "summarize",
    "AgentSettings", "rl_search", "BitAllocationEnv", "ilp_policy", "tie_units", "ILP_CHOICES",
    "sensitivity_profile", "SensitivityProfile", "policy_loss", "profile_samples", "profile_points", "PROFILE_METRICS",
    "PROFILE_METHODS", "PROFILE_IMAGES", "PROFILE_SAMPLES",
    "fixed_layers", "uniform_policy", "require_plugin",
    "quantized_copy", "QuantWrapper",
    "Normalization", "Normalized", "permutation", "loader",
    "home", "key_hash", "cache_path", "torch_save_atomic", "torch_load_cached", "warn", "moved_modules",
]


def require_plugin(kind: str, name: str) -> None:
    """Raise ArqbenchError, naming the registered ones, when no plugin ``name`` of ``kind`` exists (for a plugin
    option that names another plugin, checked when the option is given rather than when it is used)."""
    _plugins.get(kind, name)


_DEPRECATED = {  # name: (what it answers, the plugin API that deprecated it, what to import instead)
    "sensitivity": (_sensitivity, "1.1", "sensitivity_profile, SensitivityProfile, policy_loss, profile_samples, "
                                         "profile_points, PROFILE_METRICS, ... (the names it exports)"),
    "keep_old_imports": (moved_modules, "2.0", "moved_modules (old names no longer import: they say where they went)"),
}


def __getattr__(name: str):
    """Names the plugin API deprecated, kept for one minor version with a DeprecationWarning naming what to import."""
    if name in _DEPRECATED:
        from arqbench._moved import REMOVED_IN, PluginAPIDeprecation

        value, since, instead = _DEPRECATED[name]
        warnings.warn(f"arqbench.toolkit.{name} is deprecated (plugin API {since}) and goes in arqbench {REMOVED_IN}: "
                      f"write `from arqbench.toolkit import {instead}`", PluginAPIDeprecation, stacklevel=2)
        return value
    raise AttributeError(f"module 'arqbench.toolkit' has no attribute '{name}'")
