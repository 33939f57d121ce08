"""Base-model checkpoints: Cohen et al.'s ``checkpoint.pth.tar``, plain torchvision/timm state_dicts, and arqbench's own.

Cohen's layout is ``{"arch": ..., "state_dict": Sequential(NormalizeLayer, model).state_dict()}``: model keys
carry a ``1.`` prefix (``1.module.`` for ImageNet models saved from DataParallel). arqbench models wrap the
network as ``Normalized(net)``, so every layout is mapped onto ``net.*``.
"""

from pathlib import Path

import torch
from torch import nn

from arqbench import __version__
from arqbench.errors import ArqbenchError
from arqbench.files import torch_save_atomic

PREFIXES = ("1.module.", "1.", "module.", "net.", "model.")


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
    """Load the weights at ``path`` into ``model.net``; returns the checkpoint's metadata."""
    obj = read(path)
    arch = obj.get("arch") if isinstance(obj, dict) else None
    try:
        state = _strip(_state_dict(obj))
    except ValueError:
        raise ArqbenchError(f"checkpoint {path} holds no state_dict (keys: {list(obj)[:5]})") from None
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
    return {"path": str(path), "arch": arch}


def _compare(net: nn.Module, state: dict) -> tuple[list[str], list[str]]:
    expected = set(net.state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)


def save(model: nn.Module, path: Path, **metadata) -> None:
    """arqbench's own checkpoint: the network's state_dict plus what produced it."""
    net = model.net if hasattr(model, "net") else model
    torch_save_atomic(path, {"state_dict": net.state_dict(), "arqbench": __version__, **metadata})
