"""Files that are never half-written: atomic writes, the cache home, and keys that name cache entries."""

import hashlib
import json
import os
import reprlib
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from arqbench.errors import ArqbenchError


def home() -> Path:
    """The cache directory: ``$ARQBENCH_HOME``, else the user's cache dir (``~/.cache/arqbench``)."""
    if os.environ.get("ARQBENCH_HOME"):
        return Path(os.environ["ARQBENCH_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "arqbench"


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A fresh folder for a library's working files under ``$ARQBENCH_HOME/scratch``, removed on leaving (after
    an error or ^C too), so a run writes nothing in the temp directory."""
    root = home() / "scratch"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=root) as path:
        yield Path(path)


def key_hash(key: dict) -> str:
    """A short stable hash of everything that changes a cached artefact."""
    blob = json.dumps(key, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cache_path(kind: str, key: dict, suffix: str = ".pt") -> Path:
    return home() / kind / f"{key_hash(key)}{suffix}"


HOST = socket.gethostname().replace(".", "_")
UMASK = os.umask(0o022)
os.umask(UMASK)


def _atomic(path: Path, write) -> None:
    """Write to ``.NAME.HOST.PID.XXXX.tmp`` beside ``path``, fsync, then rename over ``path``.

    A process killed mid-write leaves only its temp file, never a partial ``path``; the next write
    of ``path`` (or ``remove_stale_temps``) deletes temp files whose process is gone.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        _remove_if_stale(stale)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{HOST}.{os.getpid()}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~UMASK)  # mkstemp's 0600 would make results private to their writer
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _remove_if_stale(tmp: Path) -> bool:
    """Delete a temp file of ``_atomic`` whose writer (a process on this host) no longer exists."""
    parts = tmp.name.rsplit(".", 4)
    if len(parts) != 5 or not parts[2].isdigit() or parts[1] != HOST or _alive(int(parts[2])):
        return False
    tmp.unlink(missing_ok=True)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(root: Path) -> int:
    """Delete the temp files that killed writers left under ``root``; returns how many."""
    root = Path(root)
    return sum(_remove_if_stale(tmp) for tmp in root.rglob(".*.tmp")) if root.is_dir() else 0


def check_output_dir(path: Path, flag: str) -> None:
    """Refuse, before any work, an output directory that cannot become one: an existing file, a path through
    a file, or a place this process may not write (the directory itself is created when first written)."""
    path = Path(path)
    for existing in (path, *path.parents):
        if existing.exists() or existing.is_symlink():
            break
    if not existing.is_dir():
        what = "a file" if existing.is_file() else "not a directory"
        where = f"is {what}" if existing == path else f"lies under {existing}, which is {what}"
        raise ArqbenchError(f"{flag} {path} {where}; pass a directory (it is created if missing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ArqbenchError(f"{flag} {path}: {existing} is not writable; pass a directory you can write to")


def check_output_file(path: Path, flag: str) -> None:
    """Refuse, before any work, an output file that cannot be written: a directory, or a place no directory
    can be made."""
    path = Path(path)
    if path.is_dir():
        raise ArqbenchError(f"{flag} {path} is a directory; pass a file name")
    check_output_dir(path.parent, flag)


def write_json_atomic(path: Path, data: Any) -> None:
    _atomic(path, lambda h: h.write(json.dumps(data, indent=1, sort_keys=False, default=jsonable).encode()))


def write_text_atomic(path: Path, text: str) -> None:
    _atomic(path, lambda h: h.write(text.encode()))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    _atomic(path, lambda h: h.write(data))


def torch_save_atomic(path: Path, obj: Any) -> None:
    _atomic(path, lambda h: torch.save(obj, h))


def torch_load_cached(path: Path) -> Any | None:
    """Load a cache entry; a corrupt one is reported, removed and treated as missing (so it is rebuilt)."""
    if not Path(path).exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        from arqbench.console import warn

        warn(f"cache entry {path} is corrupt ({type(exc).__name__}); rebuilding it")
        Path(path).unlink(missing_ok=True)
        return None


def read_json(path: Path, what: str = "file") -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ArqbenchError(f"{what} {path} does not exist") from None
    except OSError as exc:  # a directory, no permission, an I/O error
        raise ArqbenchError(f"{what} {path} cannot be read ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArqbenchError(f"{what} {path} is not valid JSON ({exc}); delete or repair it") from None
    except RecursionError:
        raise ArqbenchError(f"{what} {path} is nested too deeply to be one; delete or repair it") from None


JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number",
              type(None): "null"}


def check_json(data: Any, schema: dict, what: str, expected: str) -> None:
    """Refuse JSON data that does not follow ``schema`` (a JSON Schema) with one line: ``what``, where in the
    data the first problem is and what it is, then what was ``expected``."""
    import jsonschema

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
    if error is None:
        return
    where = "the top level" if not error.absolute_path else error.json_path
    if error.validator == "required":
        problem = f"lacks {next(k for k in error.validator_value if k not in error.instance)!r}"
    elif error.validator == "type":
        wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        problem = f"is {JSON_TYPES.get(type(error.instance), type(error.instance).__name__)}, not {' or '.join(wanted)}"
    elif error.validator in ("anyOf", "oneOf"):
        problem = "has none of the accepted forms"
    else:
        problem = f"is {reprlib.repr(error.instance)}, which fails {error.validator} {reprlib.repr(error.validator_value)}"
    raise ArqbenchError(f"{what}: {where} {problem}; expected {expected}")


def jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
