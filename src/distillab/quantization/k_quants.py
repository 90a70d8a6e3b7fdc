"""llama.cpp's K-quant mixes (Q4_K_M …) for quantization-aware training, with llama.cpp's own code.

Two things a fake quantizer needs that only llama.cpp knows, both taken from llama.cpp itself
(llama-cpp-python's libraries, the ``gguf-runtime`` extra) rather than re-implemented:

- **which type each tensor gets**: a mix such as Q4_K_M assigns Q4_K, Q6_K, … per tensor by its name
  and layer, and falls back (Q4_K → Q5_0, Q6_K → Q8_0) where a row does not fill 256-value K blocks
  (SmolLM2's 576-wide rows). :func:`tensor_types` quantizes a shape-alike file once with llama.cpp and
  reads the types back: what ``distillab-quantize quantize.gguf_type=q4_k_m`` will write.
- **the quantizer**: :func:`quantize_dequantize` runs ggml's ``ggml_quantize_chunk`` (the function
  llama.cpp's quantizer calls, no importance matrix) on the weight as the f16 export holds it, and
  de-quantizes with ggml's ``dequantize_row_*`` (bit-equal to the ``gguf`` package's, which
  transformers loads; ``tests/test_k_quants.py`` checks both against llama.cpp's own file).
"""

from __future__ import annotations

import ctypes
import functools
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gguf
import numpy as np
import torch
from transformers import PreTrainedModel

from distillab.quantization import llama_cpp
from distillab.quantization.gguf_export import check_architecture, export_gguf, gguf_names

QType = gguf.GGMLQuantizationType


@functools.cache
def _ggml() -> ctypes.CDLL:
    """ggml's base library inside llama-cpp-python (the quantizers and de-quantizers live there)."""
    package = Path(llama_cpp.require_llama_cpp("quantize_aware.format").__file__).parent
    lib = ctypes.CDLL(str(package / "lib" / "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
        ctypes.c_void_p,
    ]  # fmt: skip
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    return lib


def _dequantize_row(qtype: QType):
    function = getattr(_ggml(), f"dequantize_row_{qtype.name.lower()}".replace("_k", "_K"))
    function.restype = None
    function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    return function


def _chunks(rows: int, parts: int) -> list[tuple[int, int]]:
    step = -(-rows // parts)
    return [(start, min(rows, start + step)) for start in range(0, rows, step)]


def quantize_dequantize(weight: np.ndarray, qtype: QType, threads: int = 2) -> np.ndarray:
    """``weight`` (float32, rows × values) through ggml's ``qtype`` quantizer and back, in row chunks
    on ``threads`` threads (ctypes releases the GIL; the trainer waits for the result anyway)."""
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    rows, width = weight.shape
    lib = _ggml()
    row_bytes = lib.ggml_row_size(int(qtype), width)
    packed = np.empty((rows, row_bytes), np.uint8)
    out = np.empty_like(weight)
    dequantize = _dequantize_row(qtype)

    def run(span: tuple[int, int]) -> None:
        start, stop = span
        # ggml_quantize_chunk writes row `start` at dst + start * row_bytes: pass the base pointers
        lib.ggml_quantize_chunk(
            int(qtype), weight.ctypes.data, packed.ctypes.data, start * width, stop - start, width, None
        )
        dequantize(packed[start:stop].ctypes.data, out[start:stop].ctypes.data, (stop - start) * width)

    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(run, _chunks(rows, max(1, threads))))
    return out


def tensor_types(model: PreTrainedModel, file_type: str, threads: int = 2) -> dict[str, QType]:
    """The type llama.cpp's ``file_type`` mix gives each of ``model``'s tensors, by HF parameter name.

    The types depend on names, shapes and the layer count only (no importance matrix), so a file with
    the model's tensors and no vocabulary is quantized once in a temporary folder and read back."""
    hf_names = {
        gguf_name: hf_name for hf_name, gguf_name in gguf_names(model, check_architecture(model)).items()
    }
    with tempfile.TemporaryDirectory(prefix="distillab-types-") as folder:
        f16 = export_gguf(model, None, Path(folder) / "shapes-f16.gguf", "f16")
        mixed = llama_cpp.quantize_gguf(f16, Path(folder) / f"shapes-{file_type}.gguf", file_type, threads)
        reader = gguf.GGUFReader(mixed)
        return {hf_names[t.name]: QType(t.tensor_type) for t in reader.tensors if t.name in hf_names}


def fake_quantize(weight: torch.Tensor, qtype: QType, threads: int = 2) -> torch.Tensor:
    """``weight`` as a file of this mix holds it and a loader reads it back: rounded to fp16 as the
    export writes it, then ``qtype`` (F16/F32: no further rounding)."""
    if qtype == QType.F32:
        return weight.detach().float()
    w = weight.detach().float().half().float()
    if qtype == QType.F16:
        return w
    return torch.from_numpy(quantize_dequantize(w.cpu().numpy(), qtype, threads)).to(weight.device)
