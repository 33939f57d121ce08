"""The ``arqbench`` command: run | list | leaderboard | certify | train."""

import argparse
import ast
import os
import sys
from pathlib import Path

from arqbench import __version__
from arqbench.errors import ArqbenchError
from arqbench.pipeline import sweepfile

DEFAULT_OUT = Path("arqbench-results")
SHARED = "*"  # options set for every plugin that takes the key (arqbench.pipeline.config.SHARED)
# Convenience flags that set one option of every plugin taking it: flag -> (option, type, help)
ALIASES = {
    "--episodes": ("episodes", int, "search episodes of every search that has them (HAQ, ARQ; paper: 600), "
                                    "= --option NAME.episodes=N for each"),
    "--np": ("n_p", float, "incremental certification samples as a fraction of n (irs, and ARQ's search "
                           "through it; default 0.1), = --option irs.n_p=F"),
}


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise ArqbenchError(f"{self.prog}: {message} (see --help)")


def floats(flag: str):
    def parse(text: str) -> list[float]:
        try:
            return [float(v) for v in text.split(",") if v.strip()] or _empty(flag)
        except ValueError:
            raise ArqbenchError(f"{flag} expects comma-separated numbers, got '{text}'") from None
    return parse


def ints(flag: str):
    def parse(text: str) -> list[int]:
        try:
            return [int(v) for v in text.split(",") if v.strip()] or _empty(flag)
        except ValueError:
            raise ArqbenchError(f"{flag} expects comma-separated integers, got '{text}'") from None
    return parse


def names(flag: str):
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",")]
        if not all(values):
            raise ArqbenchError(f"{flag} expects comma-separated names, got '{text}'")
        return values
    return parse


def _empty(flag):
    raise ArqbenchError(f"{flag} needs at least one value")


def option(text: str) -> tuple[str, str, object]:
    """``NAME.KEY=VALUE`` -> (plugin name, key, value); values are Python literals or plain strings."""
    head, sep, raw = text.partition("=")
    method, dot, key = head.partition(".")
    if not sep or not dot or not method or not key:
        raise ArqbenchError(f"--option expects NAME.KEY=VALUE for a plugin NAME (e.g. haq.warmup=5), got '{text}'")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return method, key, value


def add_protocol_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("protocol (defaults: the benchmark's, then paper scale)")
    g.add_argument("--n0", type=int, help="selection samples of CERTIFY (paper: 100)")
    g.add_argument("--n", type=int, help="estimation samples of CERTIFY (paper: 100000)")
    g.add_argument("--alpha", type=float, help="failure probability of a certificate (paper: 0.001)")
    g.add_argument("--test-images", type=int, help="size of the fixed certification subset (paper: 500)")
    g.add_argument("--subset", help="certified test images: random (seeded, default), cohen (every 20th from 0, "
                                    "Cohen et al.'s CIFAR-10 --skip 20), cohen-imagenet (every 100th)")
    g.add_argument("--precision", choices=["fp32", "tf32", "bf16"],
                   help="arithmetic of the certified classifier's forward passes on a GPU (default fp32; tf32, bf16: "
                        "faster, and the certificate is of the classifier so run; recorded in every result)")
    g.add_argument("--batch-size", type=int, help="noisy samples per forward when certifying")
    g.add_argument("--finetune-epochs", type=int, help="quantization-aware fine-tune epochs, same for every method")
    g.add_argument("--certifier", help="certifier plugin for the final certification (default rs)")
    g.add_argument("--quantizer", help="quantizer plugin (default linear)")
    g.add_argument("--cost-model", help="cost model the budget is measured in (default bitops)")
    for flag, (key, kind, text) in ALIASES.items():
        g.add_argument(flag, type=kind, dest=f"alias_{key}", help=text)
    g.add_argument("--search-activations", action="store_true", default=None,
                   help="search activation bits too (needed below ~1.56%% BitOPs)")
    g.add_argument("--quantize-ends", dest="keep_ends", action="store_false", default=None,
                   help="let searches quantize the first and last layer below 8 bits")
    g.add_argument("--preset", choices=["paper"], help="paper: n0=100, n=100000, alpha=0.001, 500 images, 600 episodes")
    g.add_argument("--option", action="append", type=option, default=[], metavar="NAME.KEY=VALUE",
                   help="an option of plugin NAME (any kind), e.g. haq.warmup=5 or irs.n_p=0.05 (repeatable; "
                        "`arqbench list --options NAME` lists them)")


def add_place_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--data-root", type=Path, default=os.environ.get("ARQBENCH_DATA"),
                   help="where CIFAR-10/ImageNet live (or $ARQBENCH_DATA)")
    p.add_argument("--checkpoint", type=Path, help="base model checkpoint (Cohen .pth.tar, state_dict, arqbench)")
    p.add_argument("--normalization", metavar="NAME|MEAN,.../STD,...",
                   help="input normalisation the checkpoint's network was trained with, when it does not record "
                        "it (e.g. cohen for a CIFAR-10 model trained with Cohen et al.'s code)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (0: load in the main process)")


def overrides(args) -> dict:
    keys = ["n0", "n", "alpha", "test_images", "subset", "precision", "batch_size", "finetune_epochs", "certifier", "quantizer",
            "cost_model", "search_activations", "keep_ends"]
    values = {k: getattr(args, k) for k in keys}
    options: dict = {}
    for key, _, _ in ALIASES.values():
        if getattr(args, f"alias_{key}") is not None:
            options.setdefault(SHARED, {})[key] = getattr(args, f"alias_{key}")
    for name, key, value in args.option:
        options.setdefault(name, {})[key] = value
    values["options"] = options or None
    return values


def build_parser() -> Parser:
    parser = Parser(prog="arqbench", description="Robustness-aware mixed-precision quantization benchmarks.")
    parser.add_argument("--version", action="version", version=f"arqbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    run = sub.add_parser("run", help="run a sweep and store one result file per cell")
    run.add_argument("--methods", type=names("--methods"), help="search methods (default: all registered)")
    run.add_argument("--benchmarks", type=names("--benchmarks"), default=["digits"])
    run.add_argument("--sigma", type=floats("--sigma"), default=[0.25], help="noise level(s), comma list")
    run.add_argument("--budget", type=floats("--budget"), default=[0.025],
                     help="cost budget(s) as fractions of float cost, comma list (0.025 = 2.5%%)")
    run.add_argument("--seed", type=ints("--seed"), default=[0], help="seed(s), comma list")
    run.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    run.add_argument("--force", action="store_true", help="recompute finished cells")
    ex = run.add_argument_group("where cells run (arqbench.pipeline.executors)")
    ex.add_argument("--executor", choices=["local", "ray"], default="local",
                    help="local: this process (default); ray: cells as Ray tasks (pip install 'arqbench[ray]')")
    ex.add_argument("--address", help="Ray cluster to join (e.g. auto or HOST:PORT; default: a new local one)")
    ex.add_argument("--cpus-per-task", type=float, default=1, help="CPUs per Ray task (default 1)")
    ex.add_argument("--gpus-per-task", type=float, default=0, help="GPUs per Ray task (default 0; 1 with --device cuda)")
    ex.add_argument("--certify-shards", type=int, default=1,
                    help="split each cell's final certification by test image into this many tasks")
    add_protocol_flags(run)
    add_place_flags(run)
    lib = run.add_argument_group("sweep file, dry run, saved models")
    lib.add_argument("--config", type=Path, metavar="FILE",
                     help="read the run's flags from a TOML sweep file (keys: flag names; flags given here override it)")
    lib.add_argument("--dry-run", action="store_true",
                     help="print the cells, which are finished, and an estimate of the work and time; run nothing")
    lib.add_argument("--no-save-models", dest="save_models", action="store_false",
                     help="do not save each cell's quantized model beside its result (<method>-seed<n>.pt)")

    listing = sub.add_parser("list", help="list every registered plugin, by kind")
    listing.add_argument("--options", metavar="NAME", help="list the options of plugin NAME with their defaults")

    board = sub.add_parser("leaderboard", help="render leaderboards from result files")
    board.add_argument("--results", type=Path, default=DEFAULT_OUT, help="results directory")
    board.add_argument("--out", type=Path, help="where to write leaderboards (default: the results directory)")
    board.add_argument("--format", choices=["markdown", "csv", "json", "latex"], default="markdown",
                       help="markdown (with figures), csv, json or latex (booktabs) (default: markdown)")

    cert = sub.add_parser("certify", help="certify one model (float, or quantized with --policy)")
    cert.add_argument("--benchmark", default="digits")
    cert.add_argument("--sigma", type=float, help="noise level (default: the result file's, else 0.25)")
    cert.add_argument("--policy", type=Path, help="a policy JSON or a result file (replays its fine-tune and seed)")
    cert.add_argument("--seed", type=int, help="certification seed (default: the result file's, else 0)")
    cert.add_argument("--certifiers", type=names("--certifiers"),
                      help="certifiers to compare on the same model, e.g. irs,rs (default: --certifier)")
    cert.add_argument("--cohen-out", type=Path, metavar="FILE",
                      help="also write the certificates as Cohen et al.'s certify.py output (for their analyze.py)")
    cert.add_argument("--model", type=Path, metavar="FILE",
                      help="a saved model (the .pt beside a result): certify it as its cell did, without fine-tuning")
    add_protocol_flags(cert)
    add_place_flags(cert)

    exp = sub.add_parser("export", help="write a saved model in another format (ONNX with QDQ nodes)")
    exp.add_argument("file", type=Path, metavar="FILE", help="a saved model (the .pt beside a result)")
    exp.add_argument("--format", default="onnx", help="onnx (default)")
    exp.add_argument("--out", type=Path, help="where to write it (default: FILE with the format's suffix)")
    exp.add_argument("--opset", type=int, default=13, help="ONNX opset, 13 to 20 (default 13)")

    tr = sub.add_parser("train", help="train a benchmark's base model with noise augmentation")
    tr.add_argument("--benchmark", default="digits")
    tr.add_argument("--sigma", type=floats("--sigma"), default=[0.25])
    tr.add_argument("--epochs", type=int, help="override the recipe's epochs")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--amp", action="store_true", help="mixed precision (CUDA)")
    add_place_flags(tr)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        argv = sys.argv[1:] if argv is None else argv
        parser = build_parser()
        args = sweepfile.apply(parser, argv, parser.parse_args(argv))  # run --config FILE: the file's flags first
        args.argv = argv
        if args.command == "run":
            args.settings = sweepfile.resolved(args, parser)
        from arqbench.commands import COMMANDS
        from arqbench.models import data
        from arqbench.runtime import keep_freed_memory

        keep_freed_memory()

        data.WORKERS = getattr(args, "workers", 0)
        if data.WORKERS < 0:
            raise ArqbenchError(f"--workers must be >= 0, got {data.WORKERS}")
        flags = overrides(args) if hasattr(args, "option") else {}
        return COMMANDS[args.command](args, flags)
    except ArqbenchError as exc:
        print(f"arqbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("arqbench: interrupted; finished cells are saved, re-run to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
