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

import math
import pickletools
import reprlib
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from arqbench.version import __version__
from arqbench.errors import ArqbenchError
from arqbench.files import torch_save_atomic
from arqbench.models.normalize import Normalization

PREFIXES = ("1.module.", "1.", "module.", "net.", "model.")
NORMALIZATION_KEYS = [(prefix + mean, prefix + std) for prefix in ("", "0.", "module.", "module.0.")
                      for mean, std in (("mean", "std"), ("means", "sds"))]


def _state_dict(obj) -> dict:
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj:
        raise ValueError("no state_dict inside")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise ValueError("its state_dict maps something other than names to tensors")
    return obj


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


def _recorded(obj: dict, path: Path) -> Normalization | None:
    """The normalisation an arqbench checkpoint records (``{"mean": [...], "std": [...]}``), if it records one."""
    record = obj.get("normalization") if isinstance(obj, dict) else None
    if not (isinstance(record, dict) and {"mean", "std"} <= set(record)):
        return None
    mean, std = record["mean"], record["std"]
    if not (_numbers(mean) and _numbers(std) and len(mean) == len(std) and all(s > 0 for s in std)):
        raise ArqbenchError(f"checkpoint {path} is damaged: its recorded normalization is not a mean and a positive "
                            f"std per channel; re-save it with arqbench, or pass --normalization") from None
    return Normalization(tuple(map(float, mean)), tuple(map(float, std)))


def _numbers(values) -> bool:
    return isinstance(values, (list, tuple)) and len(values) > 0 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def _layout(obj, state: dict) -> str:
    if isinstance(obj, dict) and "arqbench" in obj:
        return "arqbench"
    if isinstance(obj, dict) and "arch" in obj and state and all(key.startswith("1.") for key in state):
        return "cohen"
    return "state_dict"


def read(path: Path) -> dict:
    """Load a checkpoint file safely (``weights_only``: tensors and plain data, never code); a missing, corrupt
    or unsafe file is one clear error saying what the file is, why it is refused and what to do."""
    path = Path(path)
    if not path.is_file():
        raise ArqbenchError(f"checkpoint {path} does not exist; pass an existing file with --checkpoint")
    try:
        with warnings.catch_warnings():  # e.g. torch's note on the pickle protocol: one line per error, nothing else
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        pass
    objects = _code_in(path)
    if objects:
        raise ArqbenchError(
            f"checkpoint {path} is not a plain weights file: it holds Python objects ({', '.join(objects[:3])}), "
            f"and loading those could run code, so it is refused; if you trust its source, load it in Python and "
            f"keep only the weights: torch.save(model.state_dict(), 'weights.pt')"
        ) from None
    what = ("its zip archive is damaged or truncated" if zipfile.is_zipfile(path) or _starts_as_zip(path)
            else "it is neither a zip archive nor a pickle that torch.save writes")
    raise ArqbenchError(f"checkpoint {path} is corrupt or not a PyTorch checkpoint ({what}); "
                        f"re-download or re-train it") from None


SAFE_MODULES = {"torch", "collections", "_codecs"}  # what a legacy (pre-zip) torch.save of tensors refers to


def _code_in(path: Path) -> list[str]:
    """The Python objects (``module.name``) a checkpoint refers to beyond tensors and plain data: for a zip
    checkpoint as torch reports them, for a legacy one from the opcodes of its whole pickles (nothing is run)."""
    if zipfile.is_zipfile(path):
        try:
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:
            return []
    found: list[str] = []
    try:
        with open(path, "rb") as handle:
            while handle.peek(1):
                names, strings = [], []
                for opcode, arg, _ in pickletools.genops(handle):
                    if isinstance(arg, str):
                        strings.append(arg)
                    if opcode.name in ("GLOBAL", "INST"):
                        names.append(arg.replace(" ", "."))
                    elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                        names.append(".".join(strings[-2:]))
                found += names  # a pickle read to its end: what it refers to is certain
    except Exception:
        pass  # not (or no longer) a pickle stream, e.g. the raw tensor bytes of a legacy checkpoint
    return [name for name in dict.fromkeys(found) if name.split(".")[0] not in SAFE_MODULES
            and all(part.isidentifier() for part in name.split("."))]


def _starts_as_zip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def load_into(model: nn.Module, path: Path, architecture: str = "") -> dict:
    """Load the weights at ``path`` into ``model.net``; returns the checkpoint's metadata: ``path``, ``arch``,
    ``layout`` and ``normalization`` (the one it records, else None). Setting the model's normalisation is
    the caller's (``arqbench.models.base_model.load_checkpoint``)."""
    obj = read(path)
    arch = obj.get("arch") if isinstance(obj, dict) else None
    try:
        raw = dict(_state_dict(obj))
    except ValueError as exc:
        holds = f"keys {reprlib.repr(list(obj))}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise ArqbenchError(f"checkpoint {path} is not a weights file for a model: it holds {holds}, and {exc}; "
                            f"pass a state_dict, a dict with one under 'state_dict', or arqbench's own") from None
    try:
        buffers = _pop_normalization(raw)
    except (TypeError, ValueError, RuntimeError):  # e.g. complex or bfloat16 tensors under those names
        raise ArqbenchError(f"checkpoint {path} is damaged: its normalization buffers are not float tensors; "
                            f"re-save it, or pass --normalization") from None
    normalization = _recorded(obj, path) or buffers
    layout = _layout(obj, raw)
    state = _strip(raw)
    net = model.net if hasattr(model, "net") else model
    missing, unexpected = _compare(net, state)
    if missing or unexpected:
        hint = f" (checkpoint arch {reprlib.repr(arch)})" if arch else ""
        keys = [f"{len(names)} {what} keys (e.g. {', '.join(map(reprlib.repr, names[:2]))})"
                for what, names in (("missing", missing), ("unexpected", unexpected)) if names]
        raise ArqbenchError(f"checkpoint {path}{hint} does not fit {architecture or type(net).__name__}: it is "
                            f"another architecture's weights ({', '.join(keys)}); pass a checkpoint of this "
                            f"benchmark's model")
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise ArqbenchError(f"checkpoint {path} does not fit {architecture}: it is another architecture's weights "
                            f"({lines[-1] if lines else type(exc).__name__}); pass a checkpoint of this benchmark's "
                            f"model") from None
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
