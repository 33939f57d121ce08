"""arqbench as a library: the functions ``import arqbench`` offers, on which the ``arqbench`` command is built.

- ``certify(model, inputs, labels, sigma, ...)``: randomized-smoothing certificates of any ``nn.Module``
- ``run(config=None, **settings)``: a sweep, exactly as ``arqbench run`` (same flags, same code), its results
- ``load_results(path)`` / ``load_certificates(path)``: result files as tidy pandas DataFrames
- ``quantize(model, policy, quantizer=None, calibration=...)``: a fake-quantized copy of a model
- ``base_model(benchmark, sigma)``: the trained float model a run of (benchmark, sigma) starts from
- ``load_model(path)`` / ``export_onnx(model, path, input_shape)``: saved quantized models
- ``arqbench.plugins``: ``names(kind)``, ``default(kind)``, ``create(kind, name, **options)``, ``defaults(kind, name)``

Each sets the process up as the command line does (``arqbench.runtime.keep_freed_memory``: CPU inference about
twice as fast), so a script certifies as fast as the CLI. Mistakes raise ``arqbench.errors.ArqbenchError`` with
the one-line message the CLI would print.
"""

import hashlib
import math
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
import torch
from torch import nn

from arqbench import plugins
from arqbench.errors import ArqbenchError
from arqbench.export import export_onnx
from arqbench.pipeline.saved import SavedModel
from arqbench.pipeline.saved import load as load_model
from arqbench.quantization.layers import QUANTIZABLE
from arqbench.quantization.policy import MAX_BITS, MIN_BITS, Policy
from arqbench.report import frames
from arqbench.runtime import PRECISIONS, check_precision, keep_freed_memory
from arqbench.smoothing.certificates import Certificates
from arqbench.smoothing.certification import Reference
from arqbench.smoothing.core import SmoothingConfig

__all__ = ["certify", "run", "load_results", "load_certificates", "quantize", "base_model", "load_model",
           "export_onnx", "Certificates", "SavedModel"]


def certify(model: nn.Module, inputs: torch.Tensor | Sequence[torch.Tensor], labels: Iterable[int], sigma: float,
            n0: int = 100, n: int = 100_000, alpha: float = 0.001, certifier: str | None = None,
            reference: nn.Module | Reference | None = None, *, batch_size: int = 1000, seed: int = 0,
            num_classes: int | None = None, precision: str = "fp32", options: dict | None = None,
            indices: Sequence[int] | None = None) -> Certificates:
    """Certify ``model`` smoothed with Gaussian noise of std ``sigma`` on each (input, label): Cohen et al.'s
    ``Smooth.certify`` for a whole set in one call.

    ``model`` is the base classifier f, used in eval mode on the device of its parameters; it maps a batch of
    **unnormalised** inputs (normalisation inside the model: noise is added to what you pass) to logits.
    ``inputs``: a tensor (N, ...) or a sequence of N tensors; ``labels``: N class indices. ``n0`` samples
    choose each example's class, ``n`` samples bound its probability from below at confidence 1 - ``alpha``
    (Clopper-Pearson); the radius is sigma * Phi^-1(pA_lower), or the certificate abstains (prediction -1).
    ``certifier`` is a certifier plugin (default: the one registered as the default, ``rs``: Cohen's CERTIFY;
    ``irs``: incremental, which needs the
    ``reference`` float model ``model`` derives from, and caches that model's certification in
    ``$ARQBENCH_HOME``) built with ``options``. Noise is seeded by (``seed``, the example's index in
    ``indices``, default 0..N-1), so a certificate does not depend on batching and can be replayed.
    ``batch_size``: noisy samples per forward; ``precision``: ``fp32``, ``tf32`` (CUDA only) or ``bf16`` (autocast, GPU or CPU).

    Returns ``Certificates``: a sequence of ``Certificate`` in input order, with ``.summary(radii)`` (smoothed
    accuracy, certified accuracy at each radius, ACR and its 95% interval, abstain rate) and ``.to_pandas()``.
    """
    keep_freed_memory()
    xs = inputs if isinstance(inputs, torch.Tensor) else torch.stack(list(inputs))
    ys = [int(y) for y in (labels.tolist() if isinstance(labels, torch.Tensor) else labels)]
    indices = list(range(len(xs))) if indices is None else [int(i) for i in indices]
    if not (len(xs) == len(ys) == len(indices)):
        raise ArqbenchError(f"certify: {len(xs)} inputs, {len(ys)} labels and {len(indices)} indices; give one of "
                            f"each per example")
    _check(sigma, n0, n, alpha, batch_size, precision)
    model.eval()
    device = next(model.parameters()).device
    check_precision(device, precision, "certify: precision")
    if num_classes is None:
        with torch.inference_mode():
            num_classes = int(model(xs[:1].to(device)).shape[-1])
    config = SmoothingConfig(float(sigma), int(n0), int(n), float(alpha), int(batch_size), int(seed), precision)
    if reference is not None and not isinstance(reference, Reference):
        reference = Reference(reference.eval(), {"model": _fingerprint(reference), "data": _fingerprint(xs, ys, indices)})
    certifier = certifier or plugins.default("certifier")
    plugin = plugins.create("certifier", certifier, **(options or {}))
    certs = plugin.certify(model, list(zip(indices, xs, ys)), config, num_classes, reference=reference)
    return Certificates(list(certs), config, certifier)


def _check(sigma, n0, n, alpha, batch_size, precision) -> None:
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ArqbenchError(f"certify: sigma must be a positive number, got {sigma}")
    for name, value in (("n0", n0), ("n", n), ("batch_size", batch_size)):
        if int(value) != value or value < 1:
            raise ArqbenchError(f"certify: {name} must be a positive integer, got {value}")
    if not 0 < alpha < 0.5:
        raise ArqbenchError(f"certify: alpha must be in (0, 0.5), got {alpha}")
    if precision not in PRECISIONS:
        raise ArqbenchError(f"certify: precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")


def _fingerprint(*things) -> str:
    """A hash naming a model (its state_dict) or data, for the caches of incremental certifiers."""
    digest = hashlib.sha256()
    for thing in things:
        tensors = thing.state_dict().items() if isinstance(thing, nn.Module) else [("", thing)]
        for name, value in tensors:
            digest.update(name.encode())
            value = torch.as_tensor(value)
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def run(config: str | Path | None = None, **settings) -> pd.DataFrame:
    """Run a sweep exactly as ``arqbench run`` does, and return its cells as ``load_results`` rows.

    ``config``: a TOML sweep file (``arqbench run --config``); ``settings``: the command's flags by name, with
    ``_`` or ``-`` (``methods=["arq", "uniform"]``, ``sigma=[0.25, 0.5]``, ``budget=0.025``, ``test_images=100``,
    ``search_activations=True``, ``out="results"``, ``options={"haq": {"warmup": 5}}``, ``dry_run=True``,
    ``save_models=False`` for ``--no-save-models``), overriding the file's. Finished cells in ``out`` are reused, as
    on the command line. With ``dry_run=True`` nothing runs: the estimate is printed and returned as a
    DataFrame (one row per cell: its stage costs in noisy forwards, and seconds).
    """
    from arqbench.pipeline import usecases
    from arqbench.pipeline.sweep import plan

    keep_freed_memory()
    where = "arqbench.run()"
    ran = usecases.run(usecases.run_settings(config, settings, where), usecases.command_line(config, settings, where))
    if ran.outcome is None:
        return pd.DataFrame([{"benchmark": e.cell.benchmark, "method": e.cell.method, "sigma": e.cell.sigma,
                              "budget": e.cell.budget, "seed": e.cell.seed, "state": e.state, "search": e.search,
                              "finetune": e.finetune, "certify": e.certify, "macs": e.macs, "seconds": e.seconds}
                             for e in ran.estimates])
    paths = [cell.path(ran.spec.out) for cell in plan(ran.spec)]
    return frames.frame([record for path in paths if path.is_file() for record in frames.results(path)])


def load_results(path: str | Path) -> pd.DataFrame:
    """One row per cell of a result file or a results directory (``arqbench run --out``), flat columns:
    ``benchmark, method, sigma, budget, seed, status, clean_acc, smoothed_acc, acr, acr_low, acr_high,
    cert_at_<r>, bitops_fraction, ..., model_path, path`` (all listed in ``arqbench.report.frames``)."""
    return frames.results_frame(Path(path))


def load_certificates(path: str | Path) -> pd.DataFrame:
    """One row per (cell, certified image) of a result file or results directory: the cell's benchmark, method,
    sigma, budget, seed, then the image's index, label, prediction (-1: abstain), radius, correct, p_lower."""
    return frames.certificates_frame(Path(path))


def base_model(benchmark: str | None = None, sigma: float = 0.25, checkpoint: str | Path | None = None,
               data_root: str | Path | None = None, device: str = "cpu") -> nn.Module:
    """The float base model a run of (``benchmark``, ``sigma``) quantizes, found as ``arqbench run`` finds it
    (eval mode, on ``device``): ``checkpoint``, the benchmark's conventional checkpoint under ``data_root``, or
    arqbench's own, trained on first use where the benchmark allows it (``digits``) and cached in
    ``$ARQBENCH_HOME``. ``benchmark``: default the default benchmark plugin."""
    from arqbench.models.base_model import base_model as find
    from arqbench.pipeline.config import create_benchmark

    keep_freed_memory()
    plugin = create_benchmark(benchmark or plugins.default("benchmark"))
    data_root = None if data_root is None else Path(data_root)
    model, _ = find(plugin, float(sigma), plugin.splits(data_root), torch.device(device),
                    None if checkpoint is None else Path(checkpoint), data_root)
    return model


def quantize(model: nn.Module, policy: Policy | int | tuple[int, int], quantizer: str | None = None,
             calibration: torch.Tensor | Sequence[torch.Tensor] | None = None, options: dict | None = None) -> nn.Module:
    """A fake-quantized copy of ``model`` (eval mode; the model itself is not changed) by the ``quantizer``
    plugin built with ``options`` (default: the quantizer registered as the default, e.g. ``linear``).

    ``policy``: ``{layer name: (weight bits, activation bits)}`` for some of the model's Conv2d/Linear layers
    (the others stay float), or one bit-width (or (w, a) pair) for all of them; bits in [2, 8].
    ``calibration``: a batch (or a list of batches) of inputs as the model will see them (noisy, for a smoothed
    model) that fix the activation ranges; without it the ranges stay unset, which is only of use to load a
    saved state_dict next (``arqbench.contract.Quantizer``). The copy still trains (straight-through).
    """
    names = [name for name, module in model.named_modules() if isinstance(module, QUANTIZABLE)]
    if isinstance(policy, int) or (isinstance(policy, tuple) and len(policy) == 2):
        w, a = (policy, policy) if isinstance(policy, int) else policy
        policy = {name: (w, a) for name in names}
    unknown = sorted(set(policy) - set(names))
    if unknown:
        raise ArqbenchError(f"quantize: {', '.join(unknown[:3])} {'is' if len(unknown) == 1 else 'are'} not a "
                            f"Conv2d/Linear layer of the model (its layers: {', '.join(names[:6])}...)")
    for name, bits in policy.items():
        if len(bits) != 2 or not all(isinstance(b, int) and MIN_BITS <= b <= MAX_BITS for b in bits):
            raise ArqbenchError(f"quantize: layer '{name}' has bits {bits!r}; give (weight bits, activation bits), "
                                f"each in [{MIN_BITS}, {MAX_BITS}]")
    batches = [] if calibration is None else [calibration] if isinstance(calibration, torch.Tensor) else list(calibration)
    plugin = plugins.create("quantizer", quantizer or plugins.default("quantizer"), **(options or {}))
    return plugin.quantize(model, {k: tuple(v) for k, v in policy.items()}, batches).eval()
