"""--precision fp32|tf32|bf16: what a result records, what the CPU refuses, and that the certified model runs at
the named precision (on a GPU where one is present)."""

import json

import pytest
import torch
from torch import nn

from arqbench import plugins, runtime
from arqbench.errors import ArqbenchError
from arqbench.smoothing.core import SmoothingConfig, certify_many
from conftest import TINY


def seen_while_certifying(model: nn.Module, device: torch.device, precision: str) -> dict:
    """The dtype of the first conv's output and whether TF32 matrix products were allowed, as certification ran."""
    seen = {}
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))

    def hook(module, inputs, output):
        seen.setdefault("dtype", output.dtype)
        seen.setdefault("tf32", torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32)

    handle = conv.register_forward_hook(hook)
    config = SmoothingConfig(sigma=0.25, n0=10, n=20, alpha=0.001, batch_size=30, seed=0, precision=precision)
    x = torch.rand(1, 8, 8, device=device)
    try:
        certify_many(model, [(0, x, 0)], config, 10)
    finally:
        handle.remove()
    return seen


def digits_model(device):
    torch.manual_seed(0)
    return plugins.create("benchmark", "digits").build_model().to(device).eval()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_run_records_its_precision(cli, tmp_path, precision, quick_digits_checkpoint):
    out = tmp_path / "out"
    code, _, err = cli("run", "--methods", "uniform", "--budget", "0.05", "--out", out, "--precision", precision,
                       "--checkpoint", quick_digits_checkpoint, *TINY)
    assert code == 0, err
    for name in ("fp32-seed0.json", "budget0.05/uniform-seed0.json"):
        result = json.loads((out / "digits" / "sigma0.25" / name).read_text())
        assert result["config"]["protocol"]["precision"] == precision


def test_bf16_runs_the_certified_model_in_bfloat16_on_the_cpu_too():
    cpu = torch.device("cpu")
    assert seen_while_certifying(digits_model(cpu), cpu, "bf16")["dtype"] == torch.bfloat16
    assert seen_while_certifying(digits_model(cpu), cpu, "fp32") == {"dtype": torch.float32, "tf32": False}


@pytest.mark.parametrize("command", [["run", "--dry-run"], ["certify"], ["profile"]])
def test_tf32_on_the_cpu_is_refused_in_one_line(cli, tmp_path, command):
    code, out, err = cli(*command, "--precision", "tf32", "--out" if command[0] != "certify" else "--seed",
                         tmp_path if command[0] != "certify" else 0, *TINY[:4])
    assert code == 2
    assert err.strip() == ("arqbench: error: --precision tf32 applies to CUDA devices only (on cpu it would run "
                           "plain fp32); use --precision fp32, or bf16 (autocast, on the CPU too)")


def test_the_library_refuses_tf32_on_the_cpu_too():
    from arqbench.api import certify

    with pytest.raises(ArqbenchError, match="certify: precision tf32 applies to CUDA devices only"):
        certify(digits_model(torch.device("cpu")), torch.rand(1, 1, 8, 8), [0], 0.25, n0=10, n=20, precision="tf32")


def test_a_replayed_tf32_result_is_refused_on_the_cpu_unless_fp32_is_asked_for(cli, tmp_path, quick_digits_checkpoint):
    out = tmp_path / "out"
    code, _, err = cli("run", "--methods", "uniform", "--budget", "0.05", "--out", out, "--checkpoint",
                       quick_digits_checkpoint, *TINY)
    assert code == 0, err
    path = out / "digits/sigma0.25/budget0.05/uniform-seed0.json"
    result = json.loads(path.read_text())
    result["config"]["protocol"]["precision"] = "tf32"  # as if computed on a GPU
    path.write_text(json.dumps(result))
    code, _, err = cli("certify", "--policy", path, "--checkpoint", quick_digits_checkpoint)
    assert code == 2 and "--precision tf32 applies to CUDA devices only" in err
    code, out_, err = cli("certify", "--policy", path, "--checkpoint", quick_digits_checkpoint, "--precision", "fp32")
    assert code == 0, err
    assert "precision fp32 vs tf32" in " ".join(err.split())  # certified, and said to differ from the file


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision, dtype, tf32", [("fp32", torch.float32, False), ("tf32", torch.float32, True),
                                                    ("bf16", torch.bfloat16, False)])
def test_on_the_gpu_the_certified_model_runs_at_the_named_precision(precision, dtype, tf32):
    cuda = torch.device("cuda")
    runtime.check_precision(cuda, precision)  # every precision applies on CUDA
    assert seen_while_certifying(digits_model(cuda), cuda, precision) == {"dtype": dtype, "tf32": tf32}
