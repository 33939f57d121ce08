"""Process settings: fast inference (glibc's allocator on the CPU, the arithmetic precision on the GPU), and
libraries' caches kept inside ``$ARQBENCH_HOME``."""

import contextlib
import ctypes
import ctypes.util
import os

import torch

from arqbench.errors import ArqbenchError

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Let glibc reuse freed heap memory for large tensors instead of mapping fresh pages each time.

    Every forward allocates activations of a few MB; by default glibc serves those with mmap and
    returns them on free, so each forward pays page faults: on the digits model that was half the
    CPU time. Returns False where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False


PRECISIONS = ("fp32", "tf32", "bf16")


@contextlib.contextmanager
def precision(device: torch.device, name: str = "fp32"):
    """Run a model's forward passes at ``name``: ``fp32`` (full float32: TF32 tensor cores off, whatever
    PyTorch's defaults), ``tf32`` (float32 with TF32 matrix products and convolutions on CUDA; callers refuse
    it elsewhere, ``check_precision``), or ``bf16`` (autocast to bfloat16, on the GPU or the CPU). A certificate holds for the classifier as it is run, so the precision is part
    of what a result records."""
    if name not in PRECISIONS:
        raise ArqbenchError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{name}'")
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = name == "tf32"
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=name == "bf16"):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def check_precision(device: torch.device, name: str, flag: str = "--precision") -> None:
    """Refuse a precision that would not apply on ``device``: TF32 is a CUDA tensor-core format, so ``tf32`` on
    the CPU would run, and record, what is in fact plain fp32. (``bf16`` autocasts on the CPU too.)"""
    if name == "tf32" and device.type != "cuda":
        raise ArqbenchError(f"{flag} tf32 applies to CUDA devices only (on {device.type} it would run plain fp32); "
                            f"use {flag} fp32, or bf16 (autocast, on the CPU too)")


def channels_last(model: torch.nn.Module, device: torch.device, name: str = "fp32") -> torch.nn.Module:
    """On CUDA at reduced precision, convolution networks run fastest with NHWC memory (tensor cores);
    converts ``model`` in place (the function it computes does not change) and returns it."""
    if device.type == "cuda" and name != "fp32":
        model.to(memory_format=torch.channels_last)
    return model
def thread_count(device: torch.device, requested: int | None, benchmark) -> int | None:
    """The CPU thread count a benchmark's work runs at: ``requested`` (``--threads``) wherever given, else on
    the CPU the benchmark's preferred count (``Benchmark.threads``); None leaves torch's setting."""
    if requested is not None:
        return requested
    return getattr(benchmark, "threads", None) if device.type == "cpu" else None


def set_threads(count: int | None) -> None:
    """torch's intra-op CPU thread count set to ``count`` (None: left as it is). On models as small as the
    embedded benchmarks' an operator is short, and one thread descheduled by a busy machine stalls them all."""
    if count is not None and count != torch.get_num_threads():
        torch.set_num_threads(count)


@contextlib.contextmanager
def threads(count: int | None):
    """``set_threads(count)`` for the block, torch's thread count as it was restored after."""
    before = torch.get_num_threads()
    set_threads(count)
    try:
        yield
    finally:
        set_threads(before)


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere): two CPUs may round a
    float sum differently, so trained weights and certificates name the one that computed them."""
    import platform

    try:
        with open("/proc/cpuinfo") as handle:
            fields = dict(line.split(":", 1) for line in handle.read().split("\n\n")[0].splitlines() if ":" in line)
    except OSError:
        fields = {}
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    if "model name" not in fields:
        return platform.processor() or platform.machine() or "unknown"
    vector = [flag for flag in ("avx512f", "amx_tile", "avx2") if flag in fields.get("flags", "").split()]
    return (f"{fields['model name']} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"
            f"{', ' + ' '.join(vector) if vector else ''})")


def machine(device: torch.device) -> dict:
    """What computed a result, as far as rounding goes: the device (GPU name or CPU model), thread count, torch."""
    import platform

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"device": name, "threads": torch.get_num_threads(), "torch": str(torch.__version__),
            "platform": platform.platform()}


LIBRARY_CACHES = {
    "TORCHINDUCTOR_CACHE_DIR": "torchinductor",  # importing torch._dynamo (torchvision does) makes /tmp/torchinductor_USER
    "MPLCONFIGDIR": "matplotlib",  # matplotlib's font cache, else under ~/.cache or a fresh temp directory
}


def keep_caches_home() -> None:
    """Point the caches libraries make on their own into ``$ARQBENCH_HOME``, so a run writes nothing outside
    it and ``--out``; a place the user set in the environment is kept. Call before those libraries load."""
    from arqbench.files import home

    for variable, folder in LIBRARY_CACHES.items():
        os.environ.setdefault(variable, str(home().resolve() / folder))
