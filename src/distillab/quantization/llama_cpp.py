"""llama.cpp, through llama-cpp-python (the optional ``gguf-runtime`` extra): K-quant re-quantization
of an f16 GGUF (Q4_K_M, the usual deployment format) and generation with tokens/s in the runtime
behind Ollama. Everything here fails with one line naming the extra when it is not installed.
"""

from __future__ import annotations

import ctypes
import time
from pathlib import Path

from distillab.errors import DistillabError
from distillab.files import atomic_path

# Types only llama.cpp's quantizer produces (mixtures of K-quant blocks chosen per tensor).
LLAMA_CPP_TYPES = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k")

INSTALL_HINT = (
    "make install-gguf-runtime (compiles llama.cpp once into a cached wheel, ~6 min on 2 cores; "
    "or pip install 'distillab[gguf-runtime]')"
)


def require_llama_cpp(key: str = "quantize.gguf_type"):
    try:
        import llama_cpp
    except ImportError:
        raise DistillabError(f"{key}: needs llama.cpp; {INSTALL_HINT}") from None
    return llama_cpp


def is_available() -> bool:
    try:
        require_llama_cpp()
    except DistillabError:
        return False
    return True


def quantize_gguf(source: str | Path, out: str | Path, file_type: str, threads: int = 2) -> Path:
    """Re-quantize ``source`` (an f16/f32 GGUF) to ``file_type`` with llama.cpp; atomic."""
    if file_type not in LLAMA_CPP_TYPES:
        raise DistillabError(
            f"quantize.gguf_type: {file_type!r} is not a llama.cpp type; valid: {', '.join(LLAMA_CPP_TYPES)}"
        )
    llama_cpp = require_llama_cpp()
    out = Path(out)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{file_type.upper()}")
    params.nthread = threads
    with atomic_path(out) as tmp:
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params))
        if status != 0:
            raise DistillabError(
                f"quantize.gguf_type: llama.cpp could not quantize {source} to {file_type} (status {status})"
            )
    return out


def generate(path: str | Path, prompt: str, new_tokens: int = 32, threads: int = 2) -> tuple[str, float]:
    """Greedy completion of ``prompt`` in llama.cpp; returns ``(text, decode tokens/s)``."""
    llama_cpp = require_llama_cpp()
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, n_threads=threads, verbose=False, seed=0)
    try:
        llm(prompt, max_tokens=4, temperature=0.0)  # warm-up
        start = time.perf_counter()
        out = llm(prompt, max_tokens=new_tokens, temperature=0.0)
        elapsed = time.perf_counter() - start
    finally:
        llm.close()  # freed now: at interpreter exit llama-cpp-python's finaliser can hit a torn-down module
    produced = out["usage"]["completion_tokens"]
    return out["choices"][0]["text"], produced / elapsed
