"""Quantized models to ONNX with QuantizeLinear/DequantizeLinear (QDQ) nodes at the policy's bit-widths.

Every layer of the quantized model that describes itself as integers (``arqbench.contract.QuantizedLayer``)
becomes a ``arqbench.quantization.qdq.QDQLayer``, which PyTorch's TorchScript-based exporter
(``torch.onnx.export(..., dynamo=False)``, no extra package needed to write) writes as

    input:  QuantizeLinear (uint8 if the grid is unsigned, else int8) -> Clip to the b-bit levels where they
            are narrower than the 8-bit type -> DequantizeLinear
    weight: DequantizeLinear (per output channel, axis 0) of an int8 initializer holding the b-bit integers

ONNX has no integer type narrower than 8 bits, so a b-bit tensor is an int8/uint8 tensor restricted to its
2^b levels. Node names carry the layer's name (``/net/block1/conv1/QuantizeLinear``). Checking or running the
file needs ``onnx``/``onnxruntime``: ``pip install 'arqbench[export]'``.
"""

import copy
import io
import warnings
from pathlib import Path

import torch
from torch import nn

from arqbench.errors import ArqbenchError
from arqbench.files import write_bytes_atomic
from arqbench.quantization.qdq import QDQLayer, as_qdq

OPSET = 13  # per-channel DequantizeLinear (axis) and integer Clip need 13; every current runtime reads it
MAX_OPSET = 20  # the newest the TorchScript-based exporter writes
FORMATS = ("onnx",)


def qdq_model(model: nn.Module) -> nn.Module:
    """A copy of the quantized ``model`` (on the CPU, eval mode) whose quantized layers are ``QDQLayer``s."""
    converted = as_qdq(copy.deepcopy(model).cpu().eval())
    if not any(isinstance(m, QDQLayer) for m in converted.modules()):
        raise ArqbenchError("the model has no quantized layer that describes itself as integers (a quantizer's "
                            "layers need quant_params(), arqbench.contract.QuantizedLayer); it cannot be exported "
                            "with QDQ nodes")
    return converted


def export_onnx(model: nn.Module, path: Path, input_shape: tuple[int, ...], opset: int = OPSET) -> Path:
    """Write the quantized ``model`` (inputs of ``input_shape`` = (C, H, W), any batch size) to ``path`` as ONNX
    with QDQ nodes (module docstring); returns ``path``. The input is named ``input``, the output ``logits``."""
    if not isinstance(opset, int) or not OPSET <= opset <= MAX_OPSET:
        raise ArqbenchError(f"--opset must be in [{OPSET}, {MAX_OPSET}] (per-channel DequantizeLinear needs "
                            f"{OPSET}; the exporter writes up to {MAX_OPSET}), got {opset}")
    converted = qdq_model(model)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
        try:
            torch.onnx.export(converted, (torch.zeros(1, *input_shape),), buffer, dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        except ImportError as exc:
            raise ArqbenchError(f"ONNX export needs a package that is missing ({exc}); "
                                f"pip install 'arqbench[export]'") from None
        except Exception as exc:  # e.g. an opset newer than this torch writes
            line = str(exc).splitlines()[0] if str(exc) else ""
            raise ArqbenchError(f"ONNX export failed at opset {opset}: {type(exc).__name__}: {line}") from None
    write_bytes_atomic(Path(path), buffer.getvalue())
    return Path(path)
