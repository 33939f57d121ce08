"""Base-model checkpoints: Cohen et al.'s ``checkpoint.pth.tar``, plain torchvision/timm state_dicts, and arqbench's own.

Layouts (``load_into`` returns which one it read):

- ``cohen``: ``{"arch": ..., "state_dict": Sequential(NormalizeLayer, model).state_dict(), ...}``, written by
  Cohen et al.'s ``train.py`` and the papers built on it (SmoothAdv, MACER, consistency regularisation):
  model keys carry a ``1.`` prefix (``1.module.`` for ImageNet models saved from DataParallel), and the
  normalisation constants are *not* in the state_dict (``NormalizeLayer`` keeps them as plain attributes).
- ``arqbench``: ``{"state_dict": net.state_dict(), "arqbench": version, "normalization": {"mean", "std"}, ...}``.
- ``state_dict``: anything else holding a state_dict (bare, or under ``state_dict`` / ``model``).

arqbench models wrap the network as ``Normalized(net)``, so every layout is mapped onto ``net.*``. Where a
checkpoint's state_dict does hold normalisation buffers (``mean``/``std`` of a saved ``Normalized``, or
``0.means``/``0.sds`` of a NormalizeLayer with buffers) they are read as its recorded normalisation.
"""

from pathlib import Path

import torch
from torch import nn

from arqbench import __version__
from arqbench.errors import ArqbenchError
from arqbench.files import torch_save_atomic
from arqbench.models.normalize import Normalization

PREFIXES = ("1.module.", "1.", "module.", "net.", "model.")
NORMALIZATION_KEYS = [(prefix + mean, prefix + std) for prefix in ("", "0.", "module.", "module.0.")
                      for mean, std in (("mean", "std"), ("means", "sds"))]


def _state_dict(obj) -> dict:
    if isinstance(obj, dict) and "state_dict" in obj:
        return obj["state_dict"]
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        return obj["model"]
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise ValueError("no state_dict inside")


def _strip(state: dict) -> dict:
    for prefix in PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            return _strip({key[len(prefix):]: value for key, value in state.items()})
    return state


def _pop_normalization(state: dict) -> Normalization | None:
    """Remove normalisation buffers from ``state`` and return them, if it has any."""
    for mean, std in NORMALIZATION_KEYS:
        if mean in state and std in state:
            return Normalization.of(state.pop(mean), state.pop(std))
    return None


def _recorded(obj: dict) -> Normalization | None:
    record = obj.get("normalization") if isinstance(obj, dict) else None
    if isinstance(record, dict) and {"mean", "std"} <= set(record):
        return Normalization(tuple(map(float, record["mean"])), tuple(map(float, record["std"])))
    return None


def _layout(obj, state: dict) -> str:
    if isinstance(obj, dict) and "arqbench" in obj:
        return "arqbench"
    if isinstance(obj, dict) and "arch" in obj and state and all(key.startswith("1.") for key in state):
        return "cohen"
    return "state_dict"


def read(path: Path) -> dict:
    """Load a checkpoint file safely (``weights_only``); a missing or corrupt file is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise ArqbenchError(f"checkpoint {path} does not exist; pass an existing file with --checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ArqbenchError(
            f"checkpoint {path} is corrupt or not a PyTorch checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:120]}); re-download or re-train it"
        ) from None


def load_into(model: nn.Module, path: Path, architecture: str = "") -> dict:
    """Load the weights at ``path`` into ``model.net``; returns the checkpoint's metadata: ``path``, ``arch``,
    ``layout`` and ``normalization`` (the one it records, else None). Setting the model's normalisation is
    the caller's (``arqbench.models.base_model.load_checkpoint``)."""
    obj = read(path)
    arch = obj.get("arch") if isinstance(obj, dict) else None
    try:
        raw = dict(_state_dict(obj))
    except ValueError:
        raise ArqbenchError(f"checkpoint {path} holds no state_dict (keys: {list(obj)[:5]})") from None
    buffers = _pop_normalization(raw)
    normalization = _recorded(obj) or buffers
    layout = _layout(obj, raw)
    state = _strip(raw)
    net = model.net if hasattr(model, "net") else model
    missing, unexpected = _compare(net, state)
    if missing or unexpected:
        hint = f" (checkpoint arch '{arch}')" if arch else ""
        raise ArqbenchError(
            f"checkpoint {path}{hint} does not fit {architecture or type(net).__name__}: "
            f"{len(missing)} missing keys e.g. {missing[:2]}, {len(unexpected)} unexpected e.g. {unexpected[:2]}"
        )
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ArqbenchError(f"checkpoint {path} does not fit {architecture}: {str(exc).splitlines()[-1].strip()}") from None
    return {"path": str(path), "arch": arch, "layout": layout, "normalization": normalization}


def _compare(net: nn.Module, state: dict) -> tuple[list[str], list[str]]:
    expected = set(net.state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)


def save(model: nn.Module, path: Path, **metadata) -> None:
    """arqbench's own checkpoint: the network's state_dict, the normalisation it was trained with, and what
    produced it."""
    net = model.net if hasattr(model, "net") else model
    record = {}
    if hasattr(model, "normalization"):
        record["normalization"] = {"mean": list(model.normalization.mean), "std": list(model.normalization.std)}
    torch_save_atomic(path, {"state_dict": net.state_dict(), "arqbench": __version__, **record, **metadata})
