"""What each ``arqbench`` subcommand does, given parsed arguments."""

from dataclasses import fields, replace
from pathlib import Path

import torch
from rich.table import Table

from arqbench import model_commands, plugins
from arqbench.console import console, info, stdout, warn
from arqbench.errors import ArqbenchError
from arqbench.pipeline.cell import CERTIFICATION_SETTINGS, CellRun
from arqbench.pipeline.config import Protocol, create_benchmark, resolve
from arqbench.pipeline.prepare import prepare
from arqbench.pipeline.results import REFERENCE, Cell, read, read_all
from arqbench.pipeline.sweep import SweepSpec, check_values, run_sweep
from arqbench.quantization import policy as policies
from arqbench.report import cohen, leaderboard
from arqbench.smoothing.metrics import summarize

REPLAYED = (*CERTIFICATION_SETTINGS, "finetune_epochs", "quantizer")  # what `certify --policy` reproduces


def run(args, flags: dict) -> int:
    spec = SweepSpec.from_args(args, flags)
    if args.dry_run:
        from arqbench.pipeline import dryrun

        return dryrun.show(spec)
    outcome = run_sweep(spec)
    info(f"{len(outcome.done)} cells run, {len(outcome.reused)} reused, {len(outcome.failed)} failed "
         f"in {outcome.seconds:.1f}s ({args.executor} executor); results in {args.out}")
    if outcome.waited:
        info(f"{len(outcome.waited)} cells were claimed by another arqbench run on {args.out} and waited for")
    for cell, error in outcome.failed:
        console.print(f"[red]failed[/red] {cell.label()}: {error}", highlight=False)
    if outcome.failed:
        return 1
    if outcome.skipped and not outcome.done and not outcome.reused:
        return 1  # nothing could run: every benchmark was skipped
    return 0


def list_plugins(args, flags: dict) -> int:
    if args.options:
        return list_options(args.options)
    table = Table(title="arqbench plugins")
    for column in ("kind", "name", "plugin"):
        table.add_column(column)
    for kind, entries in plugins.registries().items():
        for name in sorted(entries):
            table.add_row(kind.replace("_", " "), name, entries[name].plugin)
    stdout.print(table)
    return 0


def list_options(name: str) -> int:
    """The options of every plugin called ``name``: key, type, default (what --option NAME.KEY=VALUE sets)."""
    kinds = plugins.kinds_of(name)
    if not kinds:
        raise ArqbenchError(f"no plugin is called '{name}'; see `arqbench list`")
    for kind in kinds:
        table = Table(title=f"{kind.replace('_', ' ')} '{name}' options (--option {name}.KEY=VALUE)")
        for column in ("option", "type", "default"):
            table.add_column(column)
        for key, p in plugins.option_signature(kind, name).items():
            kind_name = getattr(p.annotation, "__name__", None) or str(p.annotation)
            table.add_row(key, "" if p.annotation is p.empty else kind_name,
                          "(required)" if p.default is p.empty else repr(p.default))
        stdout.print(table)
    return 0


def render_leaderboard(args, flags: dict) -> int:
    out = args.results if args.out is None else args.out
    for path in leaderboard.render(read_all(args.results), out, args.format, source=args.results):
        info(f"wrote {path}")
    return 0


def certify(args, flags: dict) -> int:
    """Certify the float model, a policy, or a result file's policy (replaying its protocol and seed)."""
    if args.model is not None:
        return model_commands.certify_model(args, flags)
    benchmark_name, sigma, seed = args.benchmark, args.sigma, args.seed
    source = _result_or_none(args.policy) if args.policy is not None else None
    if source is not None:
        if source["status"] != "ok":
            raise ArqbenchError(f"{args.policy} is a failed cell ({source.get('error')}); it has no numbers to "
                                f"reproduce: re-run it with `arqbench run --force`")
        benchmark_name, sigma = source["benchmark"], sigma or source["sigma"]
        seed = source["seed"] if seed is None else seed
        flags = {**_replayable(source["config"]["protocol"]), **{k: v for k, v in flags.items() if v is not None}}
    sigma = 0.25 if sigma is None else sigma
    seed = 0 if seed is None else seed
    check_values([benchmark_name], sigmas=[sigma], device=args.device, checkpoint=args.checkpoint,
                 data_root=args.data_root)
    device = torch.device(args.device)
    benchmark = create_benchmark(benchmark_name, flags.get("options"))
    protocol = resolve(benchmark, flags, args.preset)
    certifiers = args.certifiers or [protocol.certifier]
    if args.cohen_out is not None and len(certifiers) > 1:
        raise ArqbenchError(f"--cohen-out writes one certifier's certificates; pass one of {','.join(certifiers)} "
                            f"with --certifiers")
    for name in certifiers:
        plugins.get("certifier", name)
    prepared = prepare(benchmark, sigma, protocol, device, data_root=args.data_root, checkpoint=args.checkpoint,
                       normalization=args.normalization, workers=args.workers)
    policy = None
    if args.policy is not None and not (source is not None and source.get("policy") is None):  # not an fp32 row
        policy = policies.validate(policies.load(args.policy), prepared.layers, f"policy {args.policy}")
    method = REFERENCE if policy is None else (source["method"] if source is not None else "policy")
    cell = Cell(benchmark_name, sigma, None if source is None else source.get("budget"), method, seed)
    trained = CellRun(cell, prepared, protocol, device).train(policy)
    label = REFERENCE if args.policy is None else str(args.policy)

    table = Table(title=f"{benchmark_name} sigma={sigma:g} {label} (seed {seed}, n={protocol.n})")
    for column in ("certifier", "clean acc", "smoothed acc", "ACR", "abstain", "seconds"):
        table.add_column(column)
    measured = {}
    for name in certifiers:
        certs, seconds = CellRun(cell, prepared, replace(protocol, certifier=name), device).certify(trained.model)
        measured[name] = m = {"clean_acc": trained.clean_acc, **summarize(certs, benchmark.radii)}
        if args.cohen_out is not None:
            cohen.write(args.cohen_out, certs)
            info(f"wrote {args.cohen_out} ({len(certs)} images, Cohen et al.'s certify.py format)")
        table.add_row(name, f"{trained.clean_acc:.4f}", f"{m['smoothed_acc']:.4f}", f"{m['acr']:.4f}",
                      f"{m['abstain_rate']:.4f}", f"{seconds:.2f}")
    stdout.print(table)
    if source is not None and protocol.certifier in measured:
        changed = _changed(source, sigma, seed, protocol)
        if changed:
            info(f"not compared with {args.policy}: this run differs from it ({'; '.join(changed)})")
            return 0
        theirs = (source.get("base_model") or {}).get("fingerprint")
        if theirs and theirs != prepared.fingerprint:
            warn(f"the base model here ({prepared.fingerprint}) is not the one {args.policy} used ({theirs}); "
                 f"pass its checkpoint with --checkpoint to reproduce it")
        return _compare_with_source(source, measured[protocol.certifier])
    return 0


def _replayable(settings: dict) -> dict:
    """A result file's protocol settings that this version knows (older files carry settings that
    have since become plugin options and only steered the search, which a replay does not run)."""
    known = {f.name for f in fields(Protocol)}
    return {k: v for k, v in settings.items() if k in known}


def _result_or_none(path: Path) -> dict | None:
    """The result record at ``path``, or None when it is not a result file (e.g. a plain policy file)."""
    try:
        return read(path)
    except ArqbenchError:
        return None


def _changed(source: dict, sigma: float, seed: int, protocol) -> list[str]:
    """What the command line changed from the result file's run in what a replay reproduces (the
    fine-tune and the certification; then there is nothing to compare)."""
    pairs = (("sigma", sigma, source["sigma"]), ("seed", seed, source["seed"]))
    changed = [f"{name} {mine} vs {theirs}" for name, mine, theirs in pairs if mine != theirs]
    settings = protocol.as_dict()
    return changed + [f"{k} {settings[k]} vs {v}" for k, v in source["config"]["protocol"].items()
                      if k in REPLAYED and k in settings and settings[k] != v]


def _compare_with_source(source: dict, metrics: dict) -> int:
    table = Table(title="re-certification against the result file (same policy, protocol and seed)")
    for column in ("metric", "result file", "re-run", "same"):
        table.add_column(column)
    keys = ("clean_acc", "smoothed_acc", "acr", "abstain_rate")
    pairs = [(key, source["metrics"][key], metrics[key]) for key in keys]
    pairs += [(f"certified_acc@{r}", v, metrics["certified_acc"].get(r, float("nan")))
              for r, v in source["metrics"]["certified_acc"].items()]
    same = True
    for key, a, b in pairs:
        equal = abs(a - b) < 1e-9
        same &= equal
        table.add_row(key, f"{a:.6f}", f"{b:.6f}", "yes" if equal else "NO")
    stdout.print(table)
    return 0 if same else 1


def train(args, flags: dict) -> int:
    from arqbench.models.base_model import train_base_model

    if args.epochs is not None and args.epochs < 1:
        raise ArqbenchError(f"--epochs must be a positive integer, got {args.epochs}")
    check_values([args.benchmark], sigmas=args.sigma, device=args.device, data_root=args.data_root)
    benchmark = create_benchmark(args.benchmark)
    splits = benchmark.splits(args.data_root)
    for sigma in args.sigma:
        path = train_base_model(benchmark, sigma, splits, torch.device(args.device), args.seed, args.epochs,
                                args.workers, args.amp)
        note = " (not the full recipe: use it with --checkpoint)" if args.epochs not in (None, benchmark.recipe.epochs) else ""
        info(f"trained {args.benchmark} sigma={sigma:g}: {path}{note}")
    return 0


COMMANDS = {"run": run, "list": list_plugins, "leaderboard": render_leaderboard, "certify": certify, "train": train,
            "export": model_commands.export}
