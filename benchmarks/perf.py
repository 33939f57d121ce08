"""Where arqbench stands against the model's own speed: every ratio measured side by side in one process.

    python benchmarks/perf.py                  # digits and resnet20-cifar10, plus the default `arqbench run`
    python benchmarks/perf.py --skip-run       # without timing the default run
    python benchmarks/perf.py --device cuda    # on a GPU (see also benchmarks/gpu_throughput.py)
    python benchmarks/perf.py --quick          # seconds: digits at tiny n, no default run (checks it runs)

Per benchmark (resnet20-cifar10 with random weights and random inputs: its timings are real, its ACR
is not, so no ACR-based figure is reported for it):

- certification / raw ``model(x)`` throughput, and fake-quantized / float forward time;
- IRS as its paper measures it (Ugare et al., ICLR 2024): a quantized model that has been through the
  protocol's fine-tune is certified by ``irs`` with N_p = 1, 2, 5, 10% of n samples per image (the float
  model's certification already paid and cached) and from scratch by ``rs`` with the same N_p samples.
  The speed-up at equal ACR: for each N_p, the time ``rs`` needs to reach ``irs``'s ACR, interpolated
  linearly on ``rs``'s (samples, ACR, time) curve, over ``irs``'s time; averaged over the four N_p;
- ARQ's search cost: ``arq`` / ``haq`` search time at the searches' defaults on digits (600 episodes, each
  candidate fine-tuned the same ``finetune_steps``, arq re-scoring its top candidates), and with arq's
  re-score set apart (its ``rescore_s``), so the ratios are what ARQ's certification of each candidate and
  its re-score add.

The output ends with ``irs equal-acr speedup (digits): <x>x``,
``arq/haq search time without arq's re-score (digits): <z>x`` and
``arq/haq search time at equal fine-tune (digits): <y>x``.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import TensorDataset

from arqbench import plugins
from arqbench.models.benchmark import Splits
from arqbench.models.data import ProtocolData
from arqbench.pipeline.cell import CellRun
from arqbench.pipeline.config import resolve
from arqbench.pipeline.prepare import Prepared, fingerprint, prepare
from arqbench.pipeline.results import Cell
from arqbench.quantization.layers import profile_layers
from arqbench.runtime import keep_freed_memory
from arqbench.smoothing.certification import certify_subset
from arqbench.smoothing.metrics import summarize

FRACTIONS = (0.01, 0.02, 0.05, 0.10)  # N_p as a fraction of n, as in the IRS paper
RS_CURVE = (0.01, 0.02, 0.05, 0.10, 0.2, 0.5, 1.0)  # sample counts (of n) rs is timed at, for the interpolation
SETTINGS = {  # per benchmark: forward batch, certification n and images; search episodes and ARQ's images
    "digits": dict(batch=500, n=10_000, images=100, episodes=600, warmup=20),  # the searches' defaults
    "resnet20-cifar10": dict(batch=400, n=2_000, images=4, episodes=4, warmup=2),
}
QUICK = dict(batch=100, n=200, images=2, episodes=2, warmup=1)  # --quick: every step runs, no figure means anything


def throughput(model, x, seconds: float) -> float:
    """Samples per second of ``model(x)`` under inference mode."""
    with torch.inference_mode():
        model(x)
        start, calls = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            model(x)
            calls += 1
        return calls * len(x) / (time.perf_counter() - start)


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def mixed_policy(layers, fixed):
    cycle = [(4, 4), (3, 6), (2, 8), (5, 3), (6, 5)]
    return {l.name: (8, 8) if l.name in fixed else cycle[i % len(cycle)] for i, l in enumerate(layers)}


def prepared_for(name: str, protocol, device) -> Prepared:
    benchmark = plugins.create("benchmark", name)
    if name == "digits":
        return prepare(benchmark, 0.25, protocol, device)
    torch.manual_seed(0)  # random weights, random data: timings only
    model = benchmark.build_model().to(device).eval()
    images = torch.rand(600, *benchmark.input_shape)
    labels = torch.randint(0, benchmark.num_classes, (600,))
    splits = Splits(train=TensorDataset(images[:400], labels[:400]), test=TensorDataset(images[400:], labels[400:]))
    data = ProtocolData.from_splits(splits, protocol.test_images, 100)
    return Prepared(benchmark, 0.25, data, model, {"random": True}, profile_layers(model, benchmark.input_shape),
                    fingerprint(model))


def equal_acr_speedup(irs: list[tuple[float, float]], rs: list[tuple[float, float, float]]) -> list[float]:
    """Per IRS point (ACR, seconds): the time RS needs for that ACR (linear interpolation of RS's
    (samples, ACR, seconds) curve, ordered by samples; an ACR beyond RS's largest takes RS's longest time,
    a lower bound) over IRS's time."""
    acrs = np.maximum.accumulate([a for _, a, _ in rs])  # RS's ACR grows with samples; smooth its noise
    seconds = [s for _, _, s in rs]
    return [float(np.interp(acr, acrs, seconds)) / t for acr, t in irs]


def measure(name: str, device: torch.device, quick: bool = False) -> tuple[list[tuple], dict]:
    s, seconds_per_rate = (QUICK, 0.2) if quick else (SETTINGS[name], 2.0)
    benchmark = plugins.create("benchmark", name)
    protocol = resolve(benchmark, {"n0": 100, "n": s["n"], "test_images": s["images"], "batch_size": s["batch"],
                                   "search_activations": True})
    prep = prepared_for(name, protocol, device)
    rows, headline = [], {}
    x = (torch.rand(s["batch"], *benchmark.input_shape) + 0.25 * torch.randn(s["batch"], *benchmark.input_shape))
    x = x.to(device)
    raw = throughput(prep.model, x, seconds_per_rate)
    run = CellRun(Cell(name, 0.25, 0.05, "perf", 0), prep, protocol, device)
    config = run.smoothing()
    rs = plugins.create("certifier", "rs")
    _, seconds = timed(lambda: certify_subset(rs, prep.model, prep.data.certify, config, benchmark.num_classes))
    certify_rate = len(prep.data.certify.indices) * (config.n0 + config.n) / seconds
    rows.append(("certification / raw forward (samples/s)", f"{certify_rate:,.0f} / {raw:,.0f}",
                 f"{certify_rate / raw:.2f}x", ">= 0.9x"))

    ctx = run.context()
    policy = ctx.within_budget(mixed_policy(prep.layers, ctx.fixed))
    qmodel, _ = run.quantized_model(policy)  # the protocol's quantizer and fine-tune
    quant = throughput(qmodel, x, seconds_per_rate)
    rows.append(("fake-quantized / float forward time", f"{raw / quant:.2f}", f"{raw / quant:.2f}x", "<= 1.5x"))

    reference = prep.reference("test")
    _, float_seconds = timed(lambda: certify_subset(plugins.create("certifier", "irs"), prep.model, prep.data.certify,
                                                    config, benchmark.num_classes, reference, "irs: float cache"))
    curve = []
    for fraction in RS_CURVE:
        certs, t = timed(lambda: certify_subset(rs, qmodel, prep.data.certify,
                                                replace(config, n=max(1, round(fraction * config.n))),
                                                benchmark.num_classes))
        curve.append((fraction, summarize(certs, benchmark.radii)["acr"], t))
    points = []
    for fraction in FRACTIONS:
        irs = plugins.create("certifier", "irs", n_p=fraction)
        certs, t = timed(lambda: certify_subset(irs, qmodel, prep.data.certify, config, benchmark.num_classes,
                                                reference))
        points.append((summarize(certs, benchmark.radii)["acr"], t))
    speedups = equal_acr_speedup(points, curve)
    rs_at = {f: (a, t) for f, a, t in curve}
    for fraction, (acr, t), speedup in zip(FRACTIONS, points, speedups):
        rs_acr, rs_t = rs_at[fraction]
        acrs = "" if name != "digits" else f"; ACR irs {acr:.4f} vs rs {rs_acr:.4f}"
        rows.append((f"irs vs rs at N_p = {fraction:.0%} of n={config.n}{acrs}", f"{t:.2f}s / {rs_t:.2f}s",
                     f"{rs_t / t:.1f}x" + ("" if name != "digits" else f" (equal ACR {speedup:.1f}x)"),
                     "IRS paper: up to 4.1x"))
    headline["irs"] = sum(speedups) / len(speedups)
    rows.append(("float certification, paid once per base model", f"{float_seconds:.2f}s", "", ""))

    common = {"episodes": s["episodes"], "warmup": s["warmup"]}
    haq = plugins.create("search", "haq", **common)
    arq = (protocol.create("search", "arq") if name == "digits" and not quick else
           plugins.create("search", "arq", images=s["images"], **({"n": s["n"]} if quick else {})))
    arq = replace(arq, **common, finetune_steps=haq.finetune_steps)
    _, haq_seconds = timed(lambda: haq.search(run.context()))
    arq.scorer(run.context())(prep.model, "float")  # the float certification of the search split, paid once
    found, arq_seconds = timed(lambda: arq.search(run.context()))
    rows.append((f"arq / haq search time, {s['episodes']} episodes, {haq.finetune_steps} fine-tune steps each",
                 f"{arq_seconds:.1f}s / {haq_seconds:.1f}s", f"{arq_seconds / haq_seconds:.2f}x", "<= 1.5x"))
    rescore = found.info.get("rescore_s", 0.0)
    rows.append((f"  the same without arq's re-score of its top {arq.rescore_top} ({rescore:.1f}s)",
                 f"{arq_seconds - rescore:.1f}s / {haq_seconds:.1f}s", f"{(arq_seconds - rescore) / haq_seconds:.2f}x",
                 ""))
    headline["search"] = arq_seconds / haq_seconds
    headline["search_apart"] = (arq_seconds - rescore) / haq_seconds
    return [(name, *row) for row in rows], headline


def default_run() -> tuple[str, str, str, str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, ARQBENCH_HOME=os.path.join(tmp, "home"))
        command = [sys.executable, "-m", "arqbench.cli", "run", "--sigma", "0.25", "--out", os.path.join(tmp, "out")]
        _, seconds = timed(lambda: subprocess.run(command, env=env, check=True, capture_output=True))
    return ("digits", "default `arqbench run` wall time (fresh cache)", f"{seconds:.0f}s", "", "minutes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", default="digits,resnet20-cifar10")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-run", action="store_true")
    parser.add_argument("--quick", action="store_true", help="digits only, tiny n and episodes, no default run: "
                                                             "checks every step runs (seconds); its figures mean nothing")
    args = parser.parse_args()
    if args.quick:
        args.benchmarks, args.skip_run = "digits", True
    keep_freed_memory()  # as the CLI does
    os.environ.setdefault("ARQBENCH_HOME", tempfile.mkdtemp(prefix="arqbench-perf-"))
    device = torch.device(args.device)
    rows, headline = [], {}
    for name in args.benchmarks.split(","):
        measured, headline[name] = measure(name, device, args.quick)
        rows += measured
    if not args.skip_run:
        rows.append(default_run())
    table = Table(title=f"arqbench performance on {device} ({torch.get_num_threads()} threads, torch {torch.__version__})")
    for column in ("benchmark", "measure", "measured", "ratio", "target"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(width=160).print(table)
    if "digits" in headline:
        print(f"irs equal-acr speedup (digits): {headline['digits']['irs']:.2f}x")
        print(f"arq/haq search time without arq's re-score (digits): {headline['digits']['search_apart']:.2f}x")
        print(f"arq/haq search time at equal fine-tune (digits): {headline['digits']['search']:.2f}x")


if __name__ == "__main__":
    main()
