"""Published base models: the float networks a leaderboard's rows were computed from, shipped beside it.

A folder of them (``leaderboards/models/``, or any ``--base-models DIR``) holds arqbench checkpoints named
``<benchmark>-sigma<s>-seed<k>-<fingerprint>.pt`` and a ``manifest.json`` with one entry per file: the
fingerprint of its weights (``arqbench.pipeline.prepare.fingerprint``), the benchmark, sigma, training seed and
recipe, and the machine, threads and torch that trained it. ``arqbench leaderboard`` writes the folder for the
results it renders; ``arqbench run --base-models DIR`` takes a (benchmark, sigma, seed)'s model from it instead
of training one; ``arqbench certify --policy FILE`` finds the model a result file names by its fingerprint, in
``--base-models`` or in the ``models/`` folder of the nearest directory above FILE that has one.
"""

import shutil
from pathlib import Path

from arqbench.console import info, warn
from arqbench.errors import ArqbenchError
from arqbench.files import home, read_json, write_json_atomic

FOLDER, MANIFEST = "models", "manifest.json"


def check_folder(folder: Path | None) -> None:
    """Refuse a ``--base-models`` that is not a folder, before any work."""
    if folder is not None and not Path(folder).is_dir():
        raise ArqbenchError(f"--base-models {folder} is not a directory; pass a folder of published base models, "
                            f"such as leaderboards/base-models/models")


def entries(folder: Path) -> list[dict]:
    """The manifest's entries of a published folder (none when it has no manifest), each with its ``file``'s path."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return []
    manifest = read_json(path, "base-model manifest")
    models = manifest.get("models") if isinstance(manifest, dict) else None
    if not isinstance(models, list) or not all(isinstance(m, dict) and "file" in m and "fingerprint" in m
                                               for m in models):
        raise ArqbenchError(f"base-model manifest {path} is damaged: expected {{\"models\": [{{\"file\", "
                            f"\"fingerprint\", ...}}]}}; write it again with `arqbench leaderboard`")
    return [{**m, "path": Path(folder) / m["file"]} for m in models]


def by_fingerprint(fingerprint: str, folders: list[Path]) -> Path | None:
    """The published checkpoint whose weights have ``fingerprint``, in the first of ``folders`` that has one."""
    for folder in folders:
        for entry in entries(folder):
            if entry["fingerprint"] == fingerprint and entry["path"].is_file():
                return entry["path"]
    return None


def checkpoint_for(fingerprint: str | None, near: Path, base_models: Path | None = None) -> Path | None:
    """The published base model a result file near ``near`` was computed from, found by its ``fingerprint`` in
    ``base_models`` or the nearest published folder above ``near`` (said in one line), else None."""
    if not fingerprint:
        return None
    found = by_fingerprint(fingerprint, [*([Path(base_models)] if base_models else []), *nearest(near)])
    if found is not None:
        info(f"base model {fingerprint}: the published {found}")
    return found


def for_training(folder: Path, benchmark: str, architecture: str, sigma: float, seed: int, recipe: dict) -> dict | None:
    """The entry of the model arqbench's training of (benchmark, sigma, seed) with ``recipe`` would make, if published."""
    for entry in entries(folder):
        if (entry.get("benchmark"), entry.get("architecture"), entry.get("seed"), entry.get("recipe")) == \
                (benchmark, architecture, seed, recipe) and entry.get("sigma") == sigma and entry["path"].is_file():
            return entry
    return None


def nearest(path: Path) -> list[Path]:
    """The ``models/`` folder of the nearest directory above ``path`` that has a published manifest (a result
    file under ``leaderboards/results/`` finds ``leaderboards/models/``)."""
    for parent in Path(path).resolve().parents:
        if (parent / FOLDER / MANIFEST).is_file():
            return [parent / FOLDER]
    return []


def publish(results: list[dict], out: Path) -> list[Path]:
    """Copy the base model of every result that arqbench trained (found by the path it records: in
    ``$ARQBENCH_HOME``, or a published folder's) into ``out/models/`` and write its manifest; models already
    published there stay. Returns the files written. A result whose base model is not found, or is a user's own
    checkpoint, is named in one warning: its rows re-certify only where that model is."""
    from arqbench.models import checkpoints

    folder = Path(out) / FOLDER
    known = {e["fingerprint"]: e for e in entries(folder)}
    written, missing = [], {}
    for result in results:
        source = result.get("base_model") or {}
        fingerprint, recorded = source.get("fingerprint"), str(source.get("path") or "")
        if not fingerprint or fingerprint in known:
            continue
        path = Path(recorded.replace("$ARQBENCH_HOME", str(home()), 1))
        if not recorded or not path.is_file() or source.get("layout") != "arqbench":  # a user's checkpoint is theirs
            missing.setdefault(fingerprint, result)
            continue
        meta = checkpoints.read(path)
        trained = meta.get("trained") or {}
        name = f"{result['benchmark']}-sigma{result['sigma']:g}-seed{trained.get('seed', 'x')}-{fingerprint}.pt"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / name)
        written.append(folder / name)
        known[fingerprint] = {"file": name, "fingerprint": fingerprint, "benchmark": result["benchmark"],
                              "sigma": result["sigma"], "architecture": meta.get("architecture"),
                              "seed": trained.get("seed"), "recipe": meta.get("recipe"), "trained": trained,
                              "normalization": meta.get("normalization")}
    if written:
        manifest = {"about": "base models the results beside this folder were computed from; see "
                             "arqbench.models.published", "models": sorted(known.values(), key=lambda e: e["file"])}
        write_json_atomic(folder / MANIFEST, {**manifest, "models": [{k: v for k, v in e.items() if k != "path"}
                                                                     for e in manifest["models"]]})
        written.append(folder / MANIFEST)
    if missing:
        names = ", ".join(sorted(missing)[:3]) + ("" if len(missing) <= 3 else f" and {len(missing) - 3} more")
        warn(f"{len(missing)} base model(s) of these results are not arqbench's training found here ({names}): they "
             f"are not published in {folder}, and their rows re-certify only where that model is")
    return written
