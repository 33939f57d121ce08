"""Where arqbench stands against the model's own speed: every ratio of issue 8, side by side.

    python benchmarks/perf.py                  # digits and resnet20-cifar10, plus the default run
    python benchmarks/perf.py --skip-run       # without timing the default `arqbench run`

Each ratio compares two measurements taken in one process on the same model and batch size.
resnet20-cifar10 uses random weights and random inputs (throughput does not depend on them).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

import torch
from arqbench.pipeline.protocol import Prepared, fingerprint, fixed_layers, prepare, smoothing_config
from rich.console import Console
from rich.table import Table
from torch.utils.data import TensorDataset

from arqbench import plugins
from arqbench.models.benchmark import Splits
from arqbench.models.data import ProtocolData
from arqbench.pipeline.config import resolve
from arqbench.quantization.layers import profile_layers
from arqbench.runtime import keep_freed_memory
from arqbench.search.context import SearchContext, calibration_batches
from arqbench.smoothing.certification import certify_subset
from arqbench.smoothing.metrics import summarize

SETTINGS = {  # per benchmark: forward batch, certification n and images; search episodes, n and ARQ images
    "digits": dict(batch=500, n=10_000, images=20, episodes=30, search_n=2_000, arq_images=100),
    "resnet20-cifar10": dict(batch=200, n=2_000, images=2, episodes=4, search_n=2_000, arq_images=4),
}


def throughput(model, x, seconds=2.0) -> float:
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
    cycle = [4, 3, 2, 5, 6]
    return {l.name: (8, 8) if l.name in fixed else (cycle[i % len(cycle)], 8) for i, l in enumerate(layers)}


def prepared_for(name: str, protocol, device) -> Prepared:
    benchmark = plugins.create("benchmark", name)
    if name == "digits":
        return prepare(benchmark, 0.25, protocol, device)
    torch.manual_seed(0)  # random weights, random data: throughput only
    model = benchmark.build_model().to(device).eval()
    images = torch.rand(600, *benchmark.input_shape)
    labels = torch.randint(0, benchmark.num_classes, (600,))
    splits = Splits(train=TensorDataset(images[:400], labels[:400]), test=TensorDataset(images[400:], labels[400:]))
    data = ProtocolData.from_splits(splits, protocol.test_images, 100)
    return Prepared(benchmark, 0.25, data, model, {"random": True}, profile_layers(model, benchmark.input_shape),
                    fingerprint(model))


def measure(name: str, device: torch.device) -> list[tuple[str, str, str, str]]:
    s = SETTINGS[name]
    benchmark = plugins.create("benchmark", name)
    protocol = resolve(benchmark, {"n0": 100, "n": s["n"], "test_images": s["images"], "batch_size": s["batch"],
                                   "np": 0.1, "episodes": s["episodes"]})
    prep = prepared_for(name, protocol, device)
    rows = []
    x = (torch.rand(s["batch"], *benchmark.input_shape) + 0.25 * torch.randn(s["batch"], *benchmark.input_shape))
    x = x.to(device)
    raw = throughput(prep.model, x)
    config = smoothing_config(protocol, 0.25, 0)
    rs = plugins.create("certifier", "rs")
    _, seconds = timed(lambda: certify_subset(rs, prep.model, prep.data.certify, config, benchmark.num_classes))
    certify_rate = len(prep.data.certify.indices) * (config.n0 + config.n) / seconds
    rows.append(("certification / raw forward (samples/s)", f"{certify_rate:,.0f} / {raw:,.0f}",
                 f"{certify_rate / raw:.2f}x", ">= 0.9x"))

    fixed = fixed_layers(prep, protocol)
    policy = mixed_policy(prep.layers, fixed)
    quantizer = plugins.create("quantizer", "linear")
    qmodel = quantizer.quantize(prep.model, policy, calibration_batches(prep.data, 0.25, device, 0)).eval()
    quant = throughput(qmodel, x)
    rows.append(("fake-quantized / float forward time", f"{raw / quant:.2f}", f"{raw / quant:.2f}x", "<= 1.5x"))

    reference = prep.reference(protocol, "test")
    irs = plugins.create("certifier", "irs")
    _, float_seconds = timed(lambda: certify_subset(irs, prep.model, prep.data.certify, config, benchmark.num_classes,
                                                    reference, "irs: float cache"))
    rs_certs, rs_seconds = timed(lambda: certify_subset(rs, qmodel, prep.data.certify, config, benchmark.num_classes))
    irs_certs, irs_seconds = timed(lambda: certify_subset(irs, qmodel, prep.data.certify, config,
                                                          benchmark.num_classes, reference))
    rs_acr = summarize(rs_certs, benchmark.radii)["acr"]
    irs_acr = summarize(irs_certs, benchmark.radii)["acr"]
    rows.append((f"rs / irs time, np=10% (float cache once: {float_seconds:.1f}s)",
                 f"{rs_seconds:.2f}s / {irs_seconds:.2f}s", f"{rs_seconds / irs_seconds:.1f}x faster", ">= 5x"))
    rows.append(("irs ACR vs rs ACR", f"{irs_acr:.4f} vs {rs_acr:.4f}",
                 f"{100 * (irs_acr - rs_acr) / max(rs_acr, 1e-12):+.1f}%", "within 3%"))

    def context():
        return SearchContext(model=prep.model, layers=prep.layers, benchmark=benchmark, data=prep.data,
                             quantizer=quantizer, cost_model=plugins.create("cost_model", "bitops"), budget=0.05,
                             sigma=0.25, seed=0, device=device, fixed=fixed, search_activations=False,
                             smoothing=replace(config, n=s["search_n"]), settings=protocol.as_dict(),
                             reference_key=prep.reference_key)

    warmup = max(1, s["episodes"] // 3)
    _, haq_seconds = timed(lambda: plugins.create("search", "haq", warmup=warmup).search(context()))
    arq = plugins.create("search", "arq", warmup=warmup, images=s["arq_images"])
    arq.search(context())  # builds the float certification cache of the search split once
    _, arq_seconds = timed(lambda: plugins.create("search", "arq", warmup=warmup,
                                                  images=s["arq_images"]).search(context()))
    rows.append((f"arq / haq search time, {s['episodes']} episodes, n={s['search_n']}", f"{arq_seconds:.1f}s / {haq_seconds:.1f}s",
                 f"{arq_seconds / haq_seconds:.1f}x", "<= 1.5x"))
    return [(name, *row) for row in rows]


def default_run() -> tuple[str, str, str, str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, ARQBENCH_HOME=os.path.join(tmp, "home"))
        command = [sys.executable, "-m", "arqbench.cli", "run", "--methods", "arq,haq,hawq,uniform,random",
                   "--sigma", "0.25", "--out", os.path.join(tmp, "out")]
        _, seconds = timed(lambda: subprocess.run(command, env=env, check=True, capture_output=True))
    return ("digits", "default `arqbench run` wall time (fresh cache)", f"{seconds:.0f}s", "", "minutes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", default="digits,resnet20-cifar10")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-run", action="store_true")
    args = parser.parse_args()
    keep_freed_memory()  # as the CLI does
    os.environ.setdefault("ARQBENCH_HOME", tempfile.mkdtemp(prefix="arqbench-perf-"))
    device = torch.device(args.device)
    rows = [row for name in args.benchmarks.split(",") for row in measure(name, device)]
    if not args.skip_run:
        rows.append(default_run())
    table = Table(title=f"arqbench performance on {device} ({torch.get_num_threads()} threads, torch {torch.__version__})")
    for column in ("benchmark", "measure", "measured", "ratio", "target"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
