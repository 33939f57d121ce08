"""Subcommands on saved models (``arqbench.pipeline.saved``): ``certify --model FILE`` and ``export FILE``."""

from pathlib import Path

import torch
from rich.table import Table

from arqbench import runtime
from arqbench.console import info, print_table, warn
from arqbench.errors import ArqbenchError
from arqbench.export import FORMATS, export_onnx
from arqbench.models import published
from arqbench.models.training import accuracy
from arqbench.pipeline import saved
from arqbench.pipeline.cell import CERTIFICATION_SETTINGS, CellRun
from arqbench.pipeline.config import known_settings, merge_options, resolve
from arqbench.pipeline.prepare import prepare
from arqbench.pipeline.results import Cell, read
from arqbench.pipeline.sweep import check_values
from arqbench.report import cohen
from arqbench.smoothing.metrics import summarize

COMPARED = ("clean_acc", "smoothed_acc", "acr", "abstain_rate")


def certify_model(args, flags: dict) -> int:
    """Certify a saved model as its cell did (no search, no fine-tune), then compare with the result file
    beside it: exit 0 when every number is reproduced, 1 when one differs."""
    if getattr(args, "policy", None) is not None:
        raise ArqbenchError("--model and --policy both name the model to certify; pass one of them")
    if getattr(args, "certifiers", None):
        raise ArqbenchError("--certifiers compares certifiers on a replayed policy; with --model choose one with "
                            "--certifier NAME")
    loaded = saved.load(args.model, "cpu")
    cell = loaded.cell
    sigma = loaded.sigma if args.sigma is None else args.sigma
    seed = cell["seed"] if args.seed is None else args.seed
    check_values([cell["benchmark"]], sigmas=[sigma], device=args.device, checkpoint=args.checkpoint,
                 data_root=args.data_root)
    published.check_folder(args.base_models)
    given = {k: v for k, v in flags.items() if v is not None and k != "options"}
    settings = {**{k: v for k, v in known_settings(loaded.protocol).items() if k != "options"}, **given}
    settings["options"] = merge_options(loaded.protocol.get("options"), flags.get("options"))
    protocol = resolve(loaded.benchmark, settings, args.preset)
    device = torch.device(args.device)
    runtime.check_precision(device, protocol.precision)
    runtime.set_threads(runtime.thread_count(device, args.threads, loaded.benchmark))
    theirs = loaded.base_model.get("fingerprint")
    checkpoint = args.checkpoint or published.checkpoint_for(theirs, args.model, args.base_models)
    prepared = prepare(loaded.benchmark, sigma, protocol, device, data_root=args.data_root, checkpoint=checkpoint,
                       normalization=args.normalization, workers=args.workers,
                       base_seed=0 if checkpoint else protocol.base_seed(seed), base_models=args.base_models)
    if theirs and theirs != prepared.fingerprint and "irs" in protocol.certifier:
        warn(f"the base model here ({prepared.fingerprint}) is not the one {args.model} was made from ({theirs}); "
             f"an incremental certifier's reference differs: pass its folder with --base-models, or its checkpoint "
             f"with --checkpoint")
    model = loaded.model.to(device)
    runner = CellRun(Cell(cell["benchmark"], sigma, cell["budget"], cell["method"], seed), prepared, protocol, device)
    clean = accuracy(model, prepared.data.test, device, workers=prepared.data.workers)
    certs, seconds, _ = runner.certify(model)
    metrics = {"clean_acc": clean, **summarize(certs, loaded.benchmark.radii)}
    if getattr(args, "cohen_out", None) is not None:
        cohen.write(args.cohen_out, certs)
        info(f"wrote {args.cohen_out} ({len(certs)} images, Cohen et al.'s certify.py format)")
    table = Table(title=f"{Path(args.model).name}: {cell['benchmark']} sigma={sigma:g} {cell['method']} "
                        f"(seed {seed}, n={protocol.n}, {protocol.certifier}, no fine-tune)")
    for column in ("clean acc", "smoothed acc", "ACR", "abstain", "seconds"):
        table.add_column(column)
    table.add_row(f"{clean:.4f}", f"{metrics['smoothed_acc']:.4f}", f"{metrics['acr']:.4f}",
                  f"{metrics['abstain_rate']:.4f}", f"{seconds:.2f}")
    print_table(table, keep=0)
    result_path = Path(args.model).with_suffix(".json")
    if not result_path.is_file():
        return 0
    source = read(result_path)
    changed = [f"{k} {v} vs {loaded.protocol.get(k)}" for k, v in protocol.as_dict().items()
               if k in CERTIFICATION_SETTINGS and v != loaded.protocol.get(k)]
    changed += [f"{k} {a} vs {b}" for k, a, b in (("sigma", sigma, loaded.sigma), ("seed", seed, cell["seed"]))
                if a != b]
    if source.get("status") != "ok" or changed:
        info(f"not compared with {result_path}: " + ("; ".join(changed) if changed else "it is not a finished cell"))
        return 0
    return compare(source["metrics"], metrics, result_path)


def compare(recorded: dict, measured: dict, path: Path) -> int:
    """A table of the result file's numbers against the re-certification's; 0 if all are equal, else 1."""
    table = Table(title=f"re-certification against {path} (same model, protocol and seed)")
    for column in ("metric", "result file", "re-run", "same"):
        table.add_column(column)
    pairs = [(key, recorded[key], measured[key]) for key in COMPARED]
    pairs += [(f"certified_acc@{r}", v, measured["certified_acc"].get(r, float("nan")))
              for r, v in recorded["certified_acc"].items()]
    same = True
    for key, a, b in pairs:
        equal = abs(a - b) < 1e-9
        same &= equal
        table.add_row(key, f"{a:.6f}", f"{b:.6f}", "yes" if equal else "NO")
    print_table(table)
    return 0 if same else 1


def export(args, flags: dict) -> int:
    """Write a saved model in another format (ONNX with QDQ nodes at its policy's bit-widths)."""
    if args.format not in FORMATS:
        raise ArqbenchError(f"--format must be one of {', '.join(FORMATS)}, got '{args.format}'")
    loaded = saved.load(args.file)
    out = args.out or Path(args.file).with_suffix(f".{args.format}")
    export_onnx(loaded.model, out, loaded.benchmark.input_shape, args.opset)
    bits = sorted({bits for bits in loaded.policy.values()})
    info(f"wrote {out} ({Path(out).stat().st_size / 1024:.1f} KiB; {len(loaded.policy)} quantized layers, "
         f"(weight, activation) bits {', '.join(f'{w}/{a}' for w, a in bits)})")
    return 0
