"""What each ``arqbench`` subcommand does, given parsed arguments."""

import shlex
from dataclasses import replace

import torch
from rich import box
from rich.table import Table

from arqbench import model_commands, plugins, runtime
from arqbench.console import info, print_table, print_tables, say, stdout, warn
from arqbench.errors import ArqbenchError
from arqbench.files import (
    check_output_dir,
    check_output_file,
    write_bytes_atomic,
    write_text_atomic,
)
from arqbench.models import published
from arqbench.pipeline.cell import CERTIFICATION_SETTINGS, CellRun
from arqbench.pipeline.config import create_benchmark, known_settings, resolve
from arqbench.pipeline import usecases
from arqbench.pipeline.prepare import prepare
from arqbench.pipeline.results import REFERENCE, Cell, read_all, read_if_result
from arqbench.pipeline.sweep import check_values, warn_uncertifiable
from arqbench.quantization import policy as policies
from arqbench.quantization.layers import profile_layers
from arqbench.report import cohen, leaderboard
from arqbench.smoothing.metrics import summarize

REPLAYED = (*CERTIFICATION_SETTINGS, "finetune_epochs", "finetune_recipe", "quantizer")  # what `certify --policy` reproduces


def run(args, flags: dict) -> int:
    """The sweep of ``args.settings`` (``cli.run_settings``), by the use case ``arqbench.run`` calls too."""
    settings = args.settings
    outcome = usecases.run(settings, shlex.join(["arqbench", *map(str, args.argv)])).outcome
    if outcome is None:  # a dry run, printed
        return 0
    info(f"{len(outcome.done)} cells run, {len(outcome.reused)} reused, {len(outcome.failed)} failed "
         f"in {outcome.seconds:.1f}s ({settings.executor} executor); results in {settings.out}")
    if outcome.waited:
        info(f"{len(outcome.waited)} cells were claimed by another arqbench run on {settings.out} and waited for")
    for cell, error in outcome.failed:
        say(f"{cell.label()}: {error}", "[red]failed[/red] ")  # the summary, after each cell's "failed:" line
    return 1 if outcome.failed else 0


def list_plugins(args, flags: dict) -> int:
    if args.options:
        return list_options(args.options)
    table = Table(title="arqbench plugins")
    for column in ("kind", "name", "plugin", "default"):
        table.add_column(column)
    clashes = plugins.clashes()  # the load's warnings (arqbench.plugins.problems) are printed above the table
    for kind, entries in plugins.registries().items():
        rows = {name: (entry.plugin, "" if not entry.default else "yes" if entry.default is True
                       else f"for {entry.default}") for name, entry in entries.items()}
        rows |= {name: (", ".join(owners), "unusable: a clash") for (k, name), owners in clashes.items() if k == kind}
        for name in sorted(rows):
            table.add_row(kind.replace("_", " "), name, *rows[name])
    print_table(table, keep=2)
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
        print_table(table)
    return 0


def render_leaderboard(args, flags: dict) -> int:
    out = args.results if args.out is None else args.out
    results = read_all(args.results)
    check_output_dir(out, "--out")
    for path in leaderboard.render(results, out, args.format, source=args.results):
        info(f"wrote {path}")
    return 0


def certify(args, flags: dict) -> int:
    """Certify the float model, a policy, or a result file's policy (replaying its protocol and seed)."""
    if args.model is not None:
        return model_commands.certify_model(args, flags)
    benchmark_name, sigma, seed = args.benchmark, args.sigma, args.seed
    source = read_if_result(args.policy, "policy file") if args.policy is not None else None
    if source is not None:
        if source["status"] != "ok":
            raise ArqbenchError(f"{args.policy} is a failed cell ({source.get('error')}); it has no numbers to "
                                f"reproduce: re-run it with `arqbench run --force`")
        benchmark_name, sigma = source["benchmark"], sigma or source["sigma"]
        seed = source["seed"] if seed is None else seed
        flags = {**known_settings(source["config"]["protocol"]), **{k: v for k, v in flags.items() if v is not None}}
    sigma = 0.25 if sigma is None else sigma
    seed = 0 if seed is None else seed
    benchmark_name = benchmark_name or plugins.default("benchmark")
    check_values([benchmark_name], sigmas=[sigma], device=args.device, checkpoint=args.checkpoint,
                 data_root=args.data_root, seeds=[seed])
    published.check_folder(args.base_models)
    device = torch.device(args.device)
    benchmark = create_benchmark(benchmark_name, flags.get("options"))
    threads = ((source or {}).get("versions") or {}).get("threads")
    if args.threads is None and device.type == "cpu" and isinstance(threads, int) and threads > 0:
        runtime.set_threads(threads)  # CPU training and fine-tuning round differently with another thread count
        info(f"replaying with {threads} CPU thread{'s' * (threads > 1)}, as {args.policy} was computed")
    else:
        runtime.set_threads(runtime.thread_count(device, args.threads, benchmark))
    protocol = resolve(benchmark, flags, args.preset)
    runtime.check_precision(device, protocol.precision)
    certifiers = args.certifiers or [protocol.certifier]
    if args.cohen_out is not None and len(certifiers) > 1:
        raise ArqbenchError(f"--cohen-out writes one certifier's certificates; pass one of {','.join(certifiers)} "
                            f"with --certifiers")
    for name in certifiers:
        plugins.get("certifier", name)
    if args.cohen_out is not None:
        check_output_file(args.cohen_out, "--cohen-out")
    policy = None  # the fp32 row, unless a policy (or a quantized row's result file) is given
    if args.policy is not None and (source is None or source.get("policy") is not None):
        layers = profile_layers(benchmark.build_model(), benchmark.input_shape)  # checked before any model work
        policy = policies.validate(policies.load(args.policy), layers, f"policy {args.policy}")
    theirs = ((source or {}).get("base_model") or {}).get("fingerprint")
    checkpoint = args.checkpoint or (source and published.checkpoint_for(theirs, args.policy, args.base_models))
    prepared = prepare(benchmark, sigma, protocol, device, data_root=args.data_root, checkpoint=checkpoint,
                       normalization=args.normalization, workers=args.workers,
                       base_seed=0 if checkpoint else protocol.base_seed(seed), base_models=args.base_models)
    warn_uncertifiable(benchmark, sigma, protocol)
    method = REFERENCE if policy is None else (source["method"] if source is not None else "policy")
    cell = Cell(benchmark_name, sigma, None if source is None else source.get("budget"), method, seed)
    trained = CellRun(cell, prepared, protocol, device).train(policy)
    label = REFERENCE if args.policy is None else str(args.policy)

    table = Table(title=f"{benchmark_name} sigma={sigma:g} {label} (seed {seed}, n={protocol.n})")
    for column in ("certifier", "clean acc", "smoothed acc", "ACR", "abstain", "seconds"):
        table.add_column(column)
    measured = {}
    for name in certifiers:
        certs, seconds, _ = CellRun(cell, prepared, replace(protocol, certifier=name), device).certify(trained.model)
        measured[name] = m = {"clean_acc": trained.clean_acc, **summarize(certs, benchmark.radii)}
        if args.cohen_out is not None:
            cohen.write(args.cohen_out, certs)
            info(f"wrote {args.cohen_out} ({len(certs)} images, Cohen et al.'s certify.py format)")
        table.add_row(name, f"{trained.clean_acc:.4f}", f"{m['smoothed_acc']:.4f}", f"{m['acr']:.4f}",
                      f"{m['abstain_rate']:.4f}", f"{seconds:.2f}")
    print_table(table)
    if source is not None and protocol.certifier in measured:
        changed = _changed(source, sigma, seed, protocol)
        if changed:
            info(f"not compared with {args.policy}: this run differs from it ({'; '.join(changed)})")
            return 0
        if theirs and theirs != prepared.fingerprint:
            warn(f"the base model here ({prepared.fingerprint}) is not the one {args.policy} used ({theirs}), and "
                 f"no published base model has that fingerprint; pass its folder with --base-models, or its "
                 f"checkpoint with --checkpoint, to reproduce it")
        return model_commands.compare(source["metrics"], measured[protocol.certifier], args.policy)
    return 0


def show(args, flags: dict) -> int:
    """Print one cell (or a budget folder's cells) layer by layer: a table, or csv/json for scripts."""
    from arqbench.report import show as cells

    shown = cells.collect(args.path, args.seed)
    if args.format == "csv":
        stdout.file.write(cells.frame(shown).to_csv(index=False))
    elif args.format == "json":
        stdout.file.write(cells.as_json(shown) + "\n")
    else:
        print_tables(cells.tables(shown, stdout.width))
        for method in shown.methods:  # a failed cell: why, with the traceback its result file kept
            if method["status"] != "ok":
                stdout.print(f"\n{method['label']} failed: {method['error']}", markup=False, highlight=False,
                             soft_wrap=True)
                if method.get("traceback"):
                    stdout.print(method["traceback"].rstrip("\n"), markup=False, highlight=False, soft_wrap=True)
    return 0


def profile(args, flags: dict) -> int:
    """Measure (or reuse) every layer's robustness sensitivity; write its CSV and heatmap under --out."""
    from arqbench.report import figures
    from arqbench.search import sensitivity

    check_values([args.benchmark], sigmas=args.sigma, device=args.device, checkpoint=args.checkpoint,
                 data_root=args.data_root, seeds=[args.seed], out=args.out)
    published.check_folder(args.base_models)
    if args.images is not None and args.images < 1:
        raise ArqbenchError(f"--images must be a positive integer, got {args.images}")
    device = torch.device(args.device)
    benchmark = create_benchmark(args.benchmark, flags.get("options"))
    runtime.set_threads(runtime.thread_count(device, args.threads, benchmark))
    certifier_name = flags.get("certifier") or plugins.default("certifier", "profile")  # not the final certification's
    protocol = resolve(benchmark, {**flags, "certifier": None}, args.preset)
    runtime.check_precision(device, protocol.precision)
    plugins.get("certifier", certifier_name)
    for sigma in args.sigma:
        prepared = prepare(benchmark, sigma, protocol, device, data_root=args.data_root, checkpoint=args.checkpoint,
                           base_seed=0 if args.checkpoint else protocol.base_seed(args.seed),
                           base_models=args.base_models,
                           normalization=args.normalization, workers=args.workers)
        ctx = CellRun(Cell(args.benchmark, sigma, 1.0, "profile", args.seed), prepared, protocol, device).context()
        measured = sensitivity.profile(ctx, [l.name for l in prepared.layers], protocol.search_activations,
                                       args.metric, certifier_name, args.images or sensitivity.IMAGES)
        frame = measured.frame()
        stem = f"{args.benchmark}-sigma{sigma:g}-seed{args.seed}-sensitivity"
        csv, png = args.out / f"{stem}.csv", args.out / f"{stem}.png"
        write_text_atomic(csv, frame.to_csv(index=False))
        title = f"{args.benchmark}, sigma = {sigma:g}, seed {args.seed}: per-layer sensitivity"
        write_bytes_atomic(png, figures.heatmap_png(title, frame))
        print_table(_profile_table(frame, args.metric, title))
        info(f"wrote {csv} and {png}")
    return 0


def _profile_table(frame, metric: str, title: str) -> Table:
    """Layers by weight bits (activations at 8): the metric's loss when only that layer is quantized."""
    value = "acr_drop" if metric == "acr" else "disagreement"
    weights = frame[frame["a_bits"] == policies.MAX_BITS]
    grid = weights.pivot_table(index="layer", columns="w_bits", values=value, aggfunc="first")
    grid = grid.reindex(index=list(dict.fromkeys(weights.sort_values("index")["layer"])))
    table = Table(title=f"{title}: {value.replace('_', ' ')} with the weights at b bits (activations 8)",
                  box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False, show_edge=False)
    table.add_column("layer \\ b", no_wrap=True)
    for bits in grid.columns:
        table.add_column(f"{bits}", justify="right", no_wrap=True)
    for layer, row in grid.iterrows():
        table.add_row(layer, *[f"{v:.3f}" for v in row])
    return table


def _changed(source: dict, sigma: float, seed: int, protocol) -> list[str]:
    """What the command line changed from the result file's run in what a replay reproduces (the
    fine-tune and the certification; then there is nothing to compare)."""
    pairs = (("sigma", sigma, source["sigma"]), ("seed", seed, source["seed"]))
    changed = [f"{name} {mine} vs {theirs}" for name, mine, theirs in pairs if mine != theirs]
    settings = protocol.as_dict()
    return changed + [f"{k} {settings[k]} vs {v}" for k, v in source["config"]["protocol"].items()
                      if k in REPLAYED and k in settings and settings[k] != v]


def train(args, flags: dict) -> int:
    from arqbench.models.base_model import train_base_model

    if args.epochs is not None and args.epochs < 1:
        raise ArqbenchError(f"--epochs must be a positive integer, got {args.epochs}")
    check_values([args.benchmark], sigmas=args.sigma, device=args.device, data_root=args.data_root,
                 checkpoint=args.checkpoint, seeds=[args.seed])
    benchmark = create_benchmark(args.benchmark)
    runtime.set_threads(runtime.thread_count(torch.device(args.device), args.threads, benchmark))
    splits = benchmark.splits(args.data_root)
    for sigma in args.sigma:
        path = train_base_model(benchmark, sigma, splits, torch.device(args.device), args.seed, args.epochs,
                                args.workers, args.amp, init=args.checkpoint, normalization=args.normalization)
        start = f" from {args.checkpoint}" if args.checkpoint else ""
        note = ("" if args.epochs in (None, benchmark.recipe.epochs) and args.checkpoint is None
                else " (not the full recipe from scratch: use it with --checkpoint)")
        info(f"trained {args.benchmark} sigma={sigma:g}{start}: {path}{note}")
    return 0


COMMANDS = {"run": run, "list": list_plugins, "leaderboard": render_leaderboard, "show": show, "profile": profile,
            "certify": certify, "train": train, "export": model_commands.export}
