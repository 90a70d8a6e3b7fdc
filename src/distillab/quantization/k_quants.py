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

The quantizer's cost is its search for each sub-block's scale (and min); once they are chosen, placing a
value on the grid is one rounding. :class:`Grid` keeps the scales llama.cpp chose and re-rounds a
changed weight onto them in torch, as llama.cpp's quantizer itself does after its search
(``quantize_row_q{4,5,6}_K_ref``): ``quantize_aware.refresh_every`` uses it between two searches.
"""

from __future__ import annotations

import ctypes
import functools
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
    return _quantize(weight, qtype, threads)[1]


def _quantize(weight: np.ndarray, qtype: QType, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """ggml's packed blocks (rows × row bytes) and their de-quantized values."""
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
    return packed, out


# The K-quant blocks a Grid reads (ggml-common.h): 256 values per block, in sub-blocks that each have
# a scale (and a min), stored as small integers times the block's fp16 super-scale(s).
#   Q4_K (144 bytes): fp16 d, fp16 dmin, 12 bytes of 6-bit scales and mins for 8 sub-blocks of 32,
#                     value = d·sc·q − dmin·m, q in 0..15
#   Q5_K (176 bytes): the same head, value = d·sc·q − dmin·m, q in 0..31
#   Q6_K (210 bytes): 192 bytes of quants, int8 scales for 16 sub-blocks of 16, fp16 d at 208,
#                     value = d·sc·q, q in −32..31
_SCALED_MIN = {QType.Q4_K: (144, 15), QType.Q5_K: (176, 31)}  # block bytes, largest q
GRID_TYPES = frozenset({*_SCALED_MIN, QType.Q6_K})


def _six_bit_scales_and_mins(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``get_scale_min_k4`` for all 8 sub-blocks: bytes 4..16 of each Q4_K / Q5_K block."""
    q = packed[..., 4:16].astype(np.int32)
    low, high = q[..., 0:4], q[..., 4:8]
    scales = np.concatenate([low & 63, (q[..., 8:12] & 0xF) | ((low >> 6) << 4)], -1)
    mins = np.concatenate([high & 63, (q[..., 8:12] >> 4) | ((high >> 6) << 4)], -1)
    return scales, mins


def _fp16_at(packed: np.ndarray, offset: int) -> np.ndarray:
    return np.ascontiguousarray(packed[..., offset : offset + 2]).view(np.float16)[..., 0].astype(np.float32)


@dataclass(frozen=True)
class Grid:
    """The scales (and mins) llama.cpp chose for one weight, per sub-block: values are ``scale·q − min``.

    :meth:`round` puts a weight (as the f16 export holds it) on this grid as llama.cpp's quantizer
    does once its search has chosen them: ``q = nearest((x + min) / scale)`` clamped (Q6_K:
    ``nearest(x / scale)``), a zero scale keeping ``−min``. On the weight the search ran on, it gives
    llama.cpp's values (tested; bit for bit except, possibly, the sign of a zero under a zero scale)."""

    scale: torch.Tensor  # rows × sub-blocks, float32 (d·sc as ggml computes it)
    min: torch.Tensor  # rows × sub-blocks (zeros for Q6_K)
    low: int
    high: int

    @classmethod
    def from_blocks(cls, packed: np.ndarray, qtype: QType) -> Grid:
        rows = packed.shape[0]
        if qtype == QType.Q6_K:
            blocks = packed.reshape(rows, -1, 210)
            d = _fp16_at(blocks, 208)[..., None]
            sc = blocks[..., 192:208].view(np.int8).astype(np.float32)
            scale = (d * sc).reshape(rows, -1)
            return cls(torch.from_numpy(scale), torch.zeros(scale.shape), -32, 31)
        size, high = _SCALED_MIN[qtype]
        blocks = packed.reshape(rows, -1, size)
        scales, mins = _six_bit_scales_and_mins(blocks)
        scale = _fp16_at(blocks, 0)[..., None] * scales.astype(np.float32)
        low = _fp16_at(blocks, 2)[..., None] * mins.astype(np.float32)
        return cls(
            torch.from_numpy(scale.reshape(rows, -1)), torch.from_numpy(low.reshape(rows, -1)), 0, high
        )

    def round(self, weight: torch.Tensor) -> torch.Tensor:
        rows, subs = self.scale.shape
        x = weight.reshape(rows, subs, -1)
        scale, low = self.scale[..., None], self.min[..., None]
        q = torch.round((x + low) / torch.where(scale == 0, 1, scale)).clamp(self.low, self.high) + 0.0
        # + 0.0: ggml's q is an integer, so a 0 is +0 (the product then takes the scale's sign); under
        # a zero scale llama.cpp keeps an earlier q, which only sets the sign of the zero it stores:
        # −32 is what it stores for an all-zero Q6_K block
        q = torch.where(scale == 0, float(self.low), q)
        return (scale * q - low).reshape(weight.shape)  # Q6_K: min 0 (stored q + 32, value scale·q)


def quantize_with_grid(weight: np.ndarray, qtype: QType, threads: int = 2) -> tuple[np.ndarray, Grid]:
    """:func:`quantize_dequantize`, with the grid llama.cpp chose (``qtype`` in :data:`GRID_TYPES`)."""
    packed, values = _quantize(weight, qtype, threads)
    return values, Grid.from_blocks(packed, qtype)


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
