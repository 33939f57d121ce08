"""Certification throughput on a GPU against the best plain forward throughput of the same model.

    python benchmarks/gpu_throughput.py                       # the three paper models and digits
    python benchmarks/gpu_throughput.py --models resnet50-imagenet
    python benchmarks/gpu_throughput.py --quick    # seconds: digits, one batch size, short timings, small n

For each model (random weights, random inputs: throughput does not depend on them) it measures the best
plain ``model(x)`` rate the GPU reaches over precision (fp32 with TF32 off, tf32, bf16 autocast; NHWC
memory for the reduced ones) and batch size, then certifies a few images at the paper protocol (n0 = 100,
n = 100,000) with ``--precision`` of that best forward and the same batch size, and reports noisy samples
per second of certification, its ratio to the best forward, and both at strict fp32 too (certifying with
n = 20,000 there: the rate does not depend on n). Without a CUDA device it says so in one line and exits
with status 0: there is nothing to measure.
"""

import argparse
import time

import torch

from arqbench import plugins
from arqbench.runtime import channels_last, precision
from arqbench.smoothing.core import SmoothingConfig, certify_many

BATCHES = {"resnet20-cifar10": (1000, 4000, 16000), "resnet50-imagenet": (256, 512),
           "mobilenetv2-imagenet": (256, 512, 1000, 2000), "digits": (10_000, 50_000, 100_000)}
IMAGES = {"resnet20-cifar10": 10, "resnet50-imagenet": 2, "mobilenetv2-imagenet": 2, "digits": 20}


@torch.inference_mode()
def forward_rate(model, x, device, name, seconds: float) -> float:
    with precision(device, name):
        for _ in range(3):
            model(x)
        torch.cuda.synchronize()
        start, calls = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            model(x)
            calls += 1
        torch.cuda.synchronize()
    return calls * len(x) / (time.perf_counter() - start)


def certify_rate(model, benchmark, device, name, batch, images, n) -> float:
    config = SmoothingConfig(sigma=0.25, n0=100, n=n, alpha=0.001, batch_size=batch, seed=0, precision=name)
    xs = torch.rand(images, *benchmark.input_shape, device=device)
    group = [(i, xs[i], 0) for i in range(images)]
    certify_many(model, group[:1], SmoothingConfig(**{**config.__dict__, "n": batch}), benchmark.num_classes)
    torch.cuda.synchronize()
    start = time.perf_counter()
    per_forward = max(1, batch // config.n)
    for lo in range(0, images, per_forward):
        certify_many(model, group[lo:lo + per_forward], config, benchmark.num_classes)
    torch.cuda.synchronize()
    return images * (config.n0 + config.n) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet20-cifar10,resnet50-imagenet,mobilenetv2-imagenet,digits")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="digits, its smallest batch, 0.2 s per rate, n=2,000 "
                                                             "(checks it runs; its numbers mean little)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_throughput: no CUDA device here; this script measures GPU throughput, nothing was measured")
        return
    n, n32 = 100_000, 20_000
    if args.quick:
        args.models, args.seconds, n, n32 = "digits", 0.2, 2_000, 2_000
    device = torch.device("cuda")
    print(f"GPU {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"cuDNN {torch.backends.cudnn.version()}")
    rows = []
    for name in args.models.split(","):
        benchmark = plugins.create("benchmark", name)
        torch.manual_seed(0)
        model = benchmark.build_model().to(device).eval()
        best = (0.0, None, None)
        strict = (0.0, None)
        for prec in ("fp32", "tf32", "bf16"):
            channels_last(model, device, prec)
            for batch in BATCHES[name][:1] if args.quick else BATCHES[name]:
                x = torch.rand(batch, *benchmark.input_shape, device=device)
                if prec != "fp32" and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                rate = forward_rate(model, x, device, prec, args.seconds)
                print(f"{name} forward {prec} batch {batch}: {rate:,.0f} samples/s", flush=True)
                if rate > best[0]:
                    best = (rate, prec, batch)
                if prec == "fp32" and rate > strict[0]:
                    strict = (rate, batch)
            model.to(memory_format=torch.contiguous_format)
        rate, prec, batch = best
        channels_last(model, device, prec)
        cert = certify_rate(model, benchmark, device, prec, batch, IMAGES[name], n)
        model.to(memory_format=torch.contiguous_format)
        cert32 = certify_rate(model, benchmark, device, "fp32", strict[1], max(1, IMAGES[name] // 2), n32)
        line = (f"{name}: certification {cert:,.0f} samples/s at {prec} batch {batch} = {cert / rate:.2f}x the best "
                f"forward ({rate:,.0f}); fp32: {cert32:,.0f} vs {strict[0]:,.0f} forward = {cert32 / strict[0]:.2f}x")
        print(line, flush=True)
        rows.append(line)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
