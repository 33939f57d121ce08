"""The ``arqbench`` command: run | list | leaderboard | show | profile | certify | train."""

import argparse
import dataclasses
import os
import sys
import traceback
from pathlib import Path

from arqbench.version import __version__
from arqbench.errors import ArqbenchError
from arqbench.pipeline.usecases import ALIASES, DEFAULT_OUT, SHARED, RunSettings, protocol_overrides
from arqbench.pipeline.values import floats, ints, names, option, positive_int

DEFAULT_BENCHMARK = "default: the default benchmark; see `arqbench list`"


class HelpFormatter(argparse.HelpFormatter):
    """Every flag's help ends with its default: a plain one, or for a protocol setting (or an alias of a shared
    plugin option) each benchmark's."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or not action.option_strings or action.nargs == 0:  # boolean flags: off unless given
            return text
        default = action.default
        if default is argparse.SUPPRESS:  # a run flag: its default is the use case's
            default = getattr(RunSettings(), action.dest, None)
        if action.dest in protocol_settings():
            shown = benchmark_defaults(lambda protocol: protocol.as_dict()[action.dest])
        elif action.dest.startswith("alias_"):
            key = action.dest.removeprefix("alias_")
            own = searches_own(key)  # where no benchmark sets it
            shown = benchmark_defaults(lambda protocol: protocol.options.get(SHARED, {}).get(key, own))
        elif default is None:
            return text
        else:
            shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def protocol_settings() -> set[str]:
    from arqbench.pipeline.config import Protocol

    return {f.name for f in dataclasses.fields(Protocol)}


def values_by_plugin(kind: str, value_of) -> dict[str, list[str]]:
    """Each registered plugin of ``kind`` grouped by ``value_of(its name)`` (as text): value -> names. A plugin
    whose value cannot be read is left out: a broken third-party plugin must not break --help."""
    from arqbench import plugins

    users: dict[str, list[str]] = {}
    for name in plugins.names(kind):
        try:
            value = value_of(name)
        except Exception:
            continue
        users.setdefault(str(value), []).append(name)
    return users


def listed(users: dict[str, list[str]]) -> str:
    return "; ".join(f"{value} ({', '.join(names)})" for value, names in users.items())


def benchmark_defaults(value_of) -> str:
    """A default per registered benchmark, ``value_of(its resolved Protocol)``, e.g. "the benchmark's: 10000
    (digits); 100000 (resnet20-cifar10, ...)"; just the value when every benchmark has the same."""
    from arqbench import plugins
    from arqbench.pipeline.config import resolve

    users = values_by_plugin("benchmark", lambda name: value_of(resolve(plugins.create("benchmark", name), {})))
    return next(iter(users)) if len(users) == 1 else "the benchmark's: " + listed(users)


def searches_own(key: str) -> str:
    """The searches' own defaults of option ``key``, e.g. "each plugin's own: 600 (arq, haq)"."""
    from arqbench import plugins

    users = values_by_plugin("search", lambda name: plugins.defaults("search", name).get(key))
    users.pop("None", None)  # the searches without that option
    return "each plugin's own: " + listed(users)


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line, no usage dump; main() adds the "arqbench: error:" prefix
        raise ArqbenchError(f"{message} (see {self.prog} --help)")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but an unknown argument points at the help of the subcommand it was given to."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(parsed, "command", None)
            where = f"{self.prog} {command}" if command else self.prog
            raise ArqbenchError(f"unrecognized arguments: {' '.join(extras)} (see {where} --help)")
        return parsed


def add_protocol_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("protocol (each default is the benchmark's; --preset paper sets the paper's scale)")
    g.add_argument("--n0", type=int, help="selection samples of CERTIFY (paper: 100)")
    g.add_argument("--n", type=int, help="estimation samples of CERTIFY (paper: 100000)")
    g.add_argument("--alpha", type=float, help="failure probability of a certificate (paper: 0.001)")
    g.add_argument("--test-images", type=int, help="size of the fixed certification subset (paper: 500)")
    g.add_argument("--subset", help="certified test images: random (seeded, default), cohen (every 20th from 0, "
                                    "Cohen et al.'s CIFAR-10 --skip 20), cohen-imagenet (every 100th)")
    g.add_argument("--precision", choices=["fp32", "tf32", "bf16"],
                   help="arithmetic of the certified classifier's forward passes (default fp32; tf32: TF32 tensor "
                        "cores, CUDA only; bf16: autocast to bfloat16, on a GPU or the CPU; the certificate is of "
                        "the classifier so run; recorded in every result)")
    g.add_argument("--batch-size", type=int, help="noisy samples per forward when certifying")
    g.add_argument("--finetune-epochs", type=int, help="quantization-aware fine-tune epochs, same for every method")
    g.add_argument("--finetune-recipe", metavar="KEY=VALUE,...",
                   help="change the benchmark's fine-tune remedies, same for every method: bn_freeze (fraction of the "
                        "steps after which BatchNorm is frozen; 0: from the start; none: never), bn_recalibrate "
                        "(true/false), lr_scale, equalize (none/exact/relu6); e.g. bn_freeze=none")
    g.add_argument("--certifier", help="certifier plugin for the final certification (see `arqbench list`)")
    g.add_argument("--quantizer", help="quantizer plugin (see `arqbench list`)")
    g.add_argument("--cost-model", help="cost model the budget is measured in (see `arqbench list`)")
    for flag, (key, kind, text) in ALIASES.items():
        g.add_argument(flag, type=kind, dest=f"alias_{key}", help=text)
    g.add_argument("--search-activations", action="store_true", default=None,
                   help="search activation bits too (needed below ~1.56%% BitOPs; default: weights only)")
    g.add_argument("--quantize-ends", dest="keep_ends", action="store_false", default=None,
                   help="let searches quantize the first and last layer below 8 bits (default: both stay 8-bit)")
    g.add_argument("--base-seeds", choices=["shared", "per-seed"],
                   help="shared: every seed quantizes base model 0; per-seed: seed s quantizes base model s, trained "
                        "with seed s, so a table's seeds vary the network as well (default: the benchmark's; "
                        "shared with --checkpoint)")
    g.add_argument("--preset", choices=["paper"],
                   help="paper: n0=100, n=100000, alpha=0.001, 500 images, 600 episodes (default: none)")
    g.add_argument("--option", action="append", type=option, default=[], metavar="NAME.KEY=VALUE",
                   help="an option of plugin NAME (any kind), e.g. haq.warmup=5 or irs.n_p=0.05; repeatable "
                        "(default: none; `arqbench list --options NAME` lists a plugin's options and defaults)")


def add_place_flags(p: argparse.ArgumentParser, checkpoint: str | None = None, base_models: bool = True) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--data-root", type=Path, default=os.environ.get("ARQBENCH_DATA"),
                   help="where CIFAR-10/ImageNet live (default: $ARQBENCH_DATA)")
    p.add_argument("--checkpoint", type=Path, help=checkpoint or (
        "base model checkpoint: Cohen .pth.tar, state_dict or arqbench's (default: "
        "<data-root>/checkpoints/<benchmark>/noise_<sigma>/checkpoint.pth.tar, else the model `arqbench train` made)"))
    if base_models:
        p.add_argument("--base-models", type=Path, metavar="DIR",
                       help="a folder of published base models (leaderboards/models): a base model arqbench would "
                            "train is taken from it where it is there, and `certify` finds a result's base model "
                            "there by fingerprint (default: none; certify also looks in the models/ folder above the "
                            "result file)")
    p.add_argument("--normalization", metavar="NAME|MEAN,.../STD,...",
                   help="input normalisation the checkpoint's network was trained with, when it does not record "
                        "it (e.g. cohen for a CIFAR-10 model trained with Cohen et al.'s code; default: the one the "
                        "checkpoint records or its layout implies)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (0: load in the main process)")
    p.add_argument("--threads", type=positive_int("--threads"), metavar="N",
                   help="CPU threads of torch's operators, recorded in each result (default: on the CPU the "
                        "benchmark's measured preference, e.g. 1 for the small embedded ones, else torch's default)")


def overrides(args) -> dict:
    """The protocol settings a ``certify`` or ``profile`` command line gives (``usecases.protocol_overrides``)."""
    options: dict = {}
    for name, key, value in args.option:
        options.setdefault(name, {})[key] = value
    return protocol_overrides(lambda key: getattr(args, key),
                              {key: getattr(args, f"alias_{key}") for key, _, _ in ALIASES.values()}, options)


def build_parser() -> Parser:
    parser = Parser(prog="arqbench", description="Robustness-aware mixed-precision quantization benchmarks.")
    parser.add_argument("--version", action="version", version=f"arqbench {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of a failed cell (or of an error) as it happens; a failed cell's "
                             "result file keeps it either way (`arqbench show FILE`)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    run = sub.add_parser("run", help="run a sweep and store one result file per cell")
    run.add_argument("--methods", type=names("--methods"),
                     help="search methods, comma list (default: every registered search; see `arqbench list`)")
    run.add_argument("--benchmarks", type=names("--benchmarks"),
                     help="benchmarks, comma list (default: the default benchmark; see `arqbench list`)")
    run.add_argument("--sigma", type=floats("--sigma"), help="noise level(s), comma list")
    run.add_argument("--budget", type=floats("--budget"),
                     help="cost budget(s) as fractions of float cost, comma list (0.025 = 2.5%%)")
    run.add_argument("--seed", type=ints("--seed"), help="seed(s), comma list")
    run.add_argument("--out", type=Path, help="results directory")
    run.add_argument("--force", action="store_true", help="recompute finished cells")
    ex = run.add_argument_group("where cells run (arqbench.pipeline.executors)")
    ex.add_argument("--executor", choices=["local", "ray"],
                    help="local: this process; ray: cells as Ray tasks (pip install 'arqbench[ray]')")
    ex.add_argument("--address", help="Ray cluster to join, e.g. auto or HOST:PORT (default: a new local one)")
    ex.add_argument("--cpus-per-task", type=float, help="CPUs per Ray task")
    ex.add_argument("--gpus-per-task", type=float, help="GPUs per Ray task (1 with --device cuda)")
    ex.add_argument("--certify-shards", type=int,
                    help="split each cell's final certification by test image into this many tasks")
    add_protocol_flags(run)
    add_place_flags(run)
    lib = run.add_argument_group("sweep file, dry run, saved models")
    lib.add_argument("--config", type=Path, metavar="FILE",
                     help="read the run's flags from a TOML sweep file (keys: flag names; flags given here override it; default: none)")
    lib.add_argument("--dry-run", action="store_true",
                     help="print the cells, which are finished, and an estimate of the work and time; run nothing")
    lib.add_argument("--no-save-models", dest="save_models", action="store_false",
                     help="do not save each cell's quantized model beside its result (<method>-seed<n>.pt)")
    for action in run._actions:  # a run flag not given is left out: RunSettings has the defaults
        if action.dest != "help":
            action.default = argparse.SUPPRESS

    listing = sub.add_parser("list", help="list every registered plugin, by kind")
    listing.add_argument("--options", metavar="NAME", help="list the options of plugin NAME with their defaults")

    board = sub.add_parser("leaderboard", help="render leaderboards from result files")
    board.add_argument("--results", type=Path, default=DEFAULT_OUT, help="results directory (the --out of `run`)")
    board.add_argument("--out", type=Path, help="where to write leaderboards (default: the results directory)")
    board.add_argument("--format", choices=["markdown", "csv", "json", "latex"], default="markdown",
                       help="markdown (with figures), csv, json or latex (booktabs) (default: markdown)")

    show = sub.add_parser("show", help="one cell, or every method's cell of a budget folder, layer by layer")
    show.add_argument("path", type=Path, help="a result file (or the model saved beside it), or a budget folder of "
                                              "`arqbench run --out`")
    show.add_argument("--seed", type=int, help="which seed's cells (default: the lowest in the folder)")
    show.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output format")

    prof = sub.add_parser("profile", help="per-layer robustness sensitivity of a base model (CSV + heatmap)",
                          description="Every layer quantized alone at each bit-width: what the smoothed classifier "
                                      "loses on the search split (arqbench.search.sensitivity). Settings resolve as "
                                      "for `arqbench run`, so `run --methods robust-ilp` with the same settings "
                                      "reuses the cached profile; --certifier measures the ACR (default: the "
                                      "certifier registered for profiles, see `arqbench list`), "
                                      "--search-activations profiles activation bits too.")
    prof.add_argument("--benchmark", help=f"benchmark whose base model is profiled ({DEFAULT_BENCHMARK})")
    prof.add_argument("--sigma", type=floats("--sigma"), default=[0.25], help="noise level(s), comma list")
    prof.add_argument("--seed", type=int, default=0, help="seed of the calibration and the noise (a run's --seed)")
    prof.add_argument("--metric", choices=["acr", "disagreement"], default="acr",
                      help="acr: the ACR drop against the float model; disagreement: how often predictions differ")
    prof.add_argument("--images", type=int, help="search images per point (default 100)")
    prof.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the CSV and heatmap go")
    add_protocol_flags(prof)
    add_place_flags(prof)

    cert = sub.add_parser("certify", help="certify one model (float, or quantized with --policy)")
    cert.add_argument("--benchmark", help=f"benchmark whose model is certified ({DEFAULT_BENCHMARK})")
    cert.add_argument("--sigma", type=float, help="noise level (default: the result file's, else 0.25)")
    cert.add_argument("--policy", type=Path,
                      help="a policy JSON or a result file, whose fine-tune and seed are replayed (default: none: "
                           "the float model)")
    cert.add_argument("--seed", type=int, help="certification seed (default: the result file's, else 0)")
    cert.add_argument("--certifiers", type=names("--certifiers"),
                      help="certifiers to compare on the same model, e.g. irs,rs (default: --certifier)")
    cert.add_argument("--cohen-out", type=Path, metavar="FILE",
                      help="also write the certificates as Cohen et al.'s certify.py output (for their analyze.py; "
                           "default: none)")
    cert.add_argument("--model", type=Path, metavar="FILE",
                      help="a saved model (the .pt beside a result): certify it as its cell did, without fine-tuning "
                           "(default: none)")
    add_protocol_flags(cert)
    add_place_flags(cert)

    exp = sub.add_parser("export", help="write a saved model in another format (ONNX with QDQ nodes)")
    exp.add_argument("file", type=Path, metavar="FILE", help="a saved model (the .pt beside a result)")
    exp.add_argument("--format", default="onnx", help="onnx (default)")
    exp.add_argument("--out", type=Path, help="where to write it (default: FILE with the format's suffix)")
    exp.add_argument("--opset", type=int, default=13, help="ONNX opset, 13 to 20 (default 13)")

    tr = sub.add_parser("train", help="train a benchmark's base model with noise augmentation")
    tr.add_argument("--benchmark", help=f"benchmark whose base model is trained ({DEFAULT_BENCHMARK})")
    tr.add_argument("--sigma", type=floats("--sigma"), default=[0.25], help="noise level(s) to train at, comma list")
    tr.add_argument("--epochs", type=int, help="override the recipe's epochs (default: the benchmark's recipe)")
    tr.add_argument("--seed", type=int, default=0, help="training seed")
    tr.add_argument("--amp", action="store_true", help="mixed precision (CUDA)")
    add_place_flags(tr, checkpoint="fine-tune from this checkpoint (Cohen .pth.tar, state_dict or arqbench's) "
                                   "instead of training from scratch (default: from scratch)", base_models=False)
    return parser


def parse(parser: Parser, argv: list[str]) -> argparse.Namespace:
    """The command line; a benchmark left unnamed is the plugin registered as the default benchmark (for
    ``certify``, only where no file names one). ``run``'s flags are only those given (``run_settings``)."""
    from arqbench import plugins

    args = parser.parse_args(argv)
    if getattr(args, "benchmark", ()) is None and args.command != "certify":  # certify may read it from a file
        args.benchmark = plugins.default("benchmark")
    return args


def run_settings(parser: Parser, args: argparse.Namespace) -> RunSettings:
    """``arqbench run``'s settings: the flags given, by name (a switch True, ``--option``s as tables), over
    the ``--config`` file's, checked by the use case the library's ``arqbench.run`` calls too."""
    from arqbench.pipeline import usecases

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    given: dict = {}
    for action in sub.choices["run"]._actions:
        name = action.option_strings[-1].removeprefix("--") if action.option_strings else None
        if name in (None, "help", "config") or not hasattr(args, action.dest):
            continue
        if name == "option":
            for plugin, key, value in args.option:
                given.setdefault("options", {}).setdefault(plugin, {})[key] = value
        else:
            given[name] = True if action.nargs == 0 else getattr(args, action.dest)
    return usecases.run_settings(getattr(args, "config", None), given, "arqbench run")


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done; 1 some cells failed (each recorded with its reason); 2 a mistake in the command,
    its files or the environment, stated as one line before any work; 130 interrupted."""
    from arqbench import console
    from arqbench.runtime import keep_caches_home, keep_freed_memory, threads

    keep_caches_home()  # before --help or a command loads the plugins (and the libraries that make caches)
    try:
        argv = sys.argv[1:] if argv is None else argv
        parser = build_parser()
        console.DEBUG = False
        args = parse(parser, argv)
        console.DEBUG = args.debug
        args.argv = argv
        if args.command == "run":
            args.settings = run_settings(parser, args)
        from arqbench.commands import COMMANDS
        from arqbench.models import data

        keep_freed_memory()

        data.WORKERS = getattr(args, "workers", 0)
        if data.WORKERS < 0:
            raise ArqbenchError(f"--workers must be >= 0, got {data.WORKERS}")
        flags = overrides(args) if args.command != "run" and hasattr(args, "option") else {}
        with threads(None):  # a command may set torch's thread count; a caller in this process gets theirs back
            return COMMANDS[args.command](args, flags)
    except ArqbenchError as exc:
        console.debug("".join(traceback.format_exception(exc)))
        return error(str(exc))
    except OSError as exc:  # the system refused a path: too long, no space, read-only, ...
        return error(f"{exc.filename}: {exc.strerror or exc}" if exc.filename else str(exc))
    except KeyboardInterrupt:
        print("arqbench: interrupted; finished cells are saved, re-run to continue", file=sys.stderr)
        return 130


def error(message: str) -> int:
    """Print ``message`` as ONE line (a newline inside, e.g. from a file name, is shown escaped)."""
    one_line = message.replace("\r", "\\r").replace("\n", "\\n")
    print(f"arqbench: error: {one_line}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
