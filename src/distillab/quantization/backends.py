"""Quantization backends. Each ``conf/quantize/*.yaml`` names one of these classes by ``_target_``;
``distillab-quantize`` checks it before any model loads, then ``quantize`` writes the deployable
artifact and returns the model to evaluate and its decode speed.

- :class:`GGUF`: llama.cpp's file format. f32 … q4_0 written in Python (``gguf_export.py``); K-quants
  (q4_k_m …) through llama.cpp (``llama_cpp.py``, extra ``gguf-runtime``). Quality is measured the
  way a user gets the file back: de-quantized through transformers' GGUF loader.
- :class:`TorchAO`: torchao weight-only int8 (per channel) / int4 (per group), in process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from distillab.config import build_target
from distillab.errors import DistillabError
from distillab.evaluation.footprint import decode_tokens_per_second
from distillab.files import atomic_path
from distillab.models.loading import load_model
from distillab.models.spec import ModelSpec
from distillab.quantization import llama_cpp
from distillab.quantization.gguf_export import PYTHON_TYPES, check_architecture, export_gguf
from distillab.quantization.weight_only import check_bits, quantize_weights

log = logging.getLogger("distillab")

# Text with digits, spaces, contractions and newlines: where pre-tokenizer rules differ.
TOKENIZER_PROBE = "In 1997, 12,345 people paid $3.50 -- don't   they?\n\n  Yes. 北京 café"


@dataclass
class Quantized:
    artifact: Path  # the file a user deploys
    model: Any  # what the eval suite runs (de-quantized for GGUF)
    runtime: str  # what measured the decode speed
    tokens_per_s: float
    sample: str | None = None  # llama.cpp's continuation of the speed prompt


@dataclass
class GGUF:
    gguf_type: str = "q8_0"
    pre_tokenizer: str = "smollm"  # llama.cpp's pre-tokenizer name written into the file
    score_in_llama_cpp: Any = "auto"  # the suite scored in llama.cpp too: auto (if installed) | true | false
    name: ClassVar[str] = "gguf"

    @property
    def _llama_cpp_mode(self) -> str:
        return str(self.score_in_llama_cpp).lower()  # YAML reads true/false as booleans

    def scores_in_llama_cpp(self) -> bool:
        """Whether the file is also scored in llama.cpp (``true`` needs the runtime: see ``check``)."""
        if self._llama_cpp_mode != "auto":
            return self._llama_cpp_mode == "true"
        if not llama_cpp.is_available():
            log.warning(
                "quantize.score_in_llama_cpp: llama.cpp is not installed, so the torch score stands alone "
                "(%s)",
                llama_cpp.INSTALL_HINT,
            )
            return False
        return True

    @property
    def label(self) -> str:
        return self.gguf_type

    def artifact_name(self) -> str:
        return f"model-{self.gguf_type}.gguf"

    def check(self) -> None:
        if self._llama_cpp_mode not in ("auto", "true", "false"):
            raise DistillabError(
                f"quantize.score_in_llama_cpp: {self.score_in_llama_cpp!r} is not valid; valid: auto | true | false"
            )
        if self._llama_cpp_mode == "true":
            llama_cpp.require_llama_cpp("quantize.score_in_llama_cpp")
        if self.gguf_type in llama_cpp.LLAMA_CPP_TYPES:
            llama_cpp.require_llama_cpp()
        elif self.gguf_type not in PYTHON_TYPES:
            valid = ", ".join([*PYTHON_TYPES, *llama_cpp.LLAMA_CPP_TYPES])
            raise DistillabError(f"quantize.gguf_type: unknown {self.gguf_type!r}; valid: {valid}")

    def quantize(
        self, model, tokenizer, run_dir: Path, threads: int, prompt: str, new_tokens: int
    ) -> Quantized:
        out, quantized = self._export(model, tokenizer, run_dir, threads)
        if llama_cpp.is_available():
            text, speed = llama_cpp.generate(out, prompt, new_tokens, threads)
            return Quantized(out, quantized, "llama.cpp", speed, text)
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        speed = decode_tokens_per_second(quantized, ids, new_tokens)
        runtime = "transformers (de-quantized to float32; install gguf-runtime for llama.cpp)"
        return Quantized(out, quantized, runtime, speed)

    def _export(self, model, tokenizer, run_dir: Path, threads: int) -> tuple[Path, Any]:
        """Export, re-load through transformers (de-quantized), return ``(file, model)``.

        The re-loaded model is evaluated with the input's tokenizer: the weights are what was
        quantized. transformers rebuilds a tokenizer from the GGUF with its own pre-tokenizer rules;
        a warning says when it would split text differently from the input's (then llama.cpp users
        may see different tokens, while the quality numbers here stay comparable).
        """
        check_architecture(model)
        out = run_dir / self.artifact_name()
        if self.gguf_type in PYTHON_TYPES:
            export_gguf(model, tokenizer, out, self.gguf_type, pre_tokenizer=self.pre_tokenizer)
        else:
            f16 = export_gguf(
                model, tokenizer, run_dir / "model-f16.gguf", "f16", pre_tokenizer=self.pre_tokenizer
            )
            llama_cpp.quantize_gguf(f16, out, self.gguf_type, threads=threads)
            f16.unlink()  # an intermediate: only the deployable file stays
        quantized, rebuilt = load_model(ModelSpec(name_or_path=str(run_dir), gguf_file=out.name))
        if rebuilt(TOKENIZER_PROBE).input_ids != tokenizer(TOKENIZER_PROBE).input_ids:
            log.warning(
                "%s: the tokenizer transformers rebuilds from it splits text differently from the input's "
                "(quantize.pre_tokenizer=%s); quality is measured with the input's tokenizer",
                out.name,
                self.pre_tokenizer,
            )
        return out, quantized


@dataclass
class TorchAO:
    bits: int = 8  # 8 (per channel) | 4 (per group)
    group_size: int = 32
    name: ClassVar[str] = "torchao"

    @property
    def label(self) -> str:
        return f"int{self.bits}"

    def check(self) -> None:
        check_bits(int(self.bits), int(self.group_size))

    def quantize(
        self, model, tokenizer, run_dir: Path, threads: int, prompt: str, new_tokens: int
    ) -> Quantized:
        quantized = quantize_weights(model, int(self.bits), int(self.group_size))  # in place
        artifact = run_dir / f"model-int{self.bits}.pt"
        with atomic_path(artifact) as tmp:  # never a truncated file that looks complete
            torch.save(quantized.state_dict(), tmp)
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        speed = decode_tokens_per_second(quantized, ids, new_tokens)
        return Quantized(artifact, quantized, "transformers + torchao (CPU)", speed)


def build_backend(quantize_cfg) -> GGUF | TorchAO:
    """The ``quantize`` config's backend, checked: every mistake fails before a model is loaded."""
    backend = build_target(
        quantize_cfg, "quantize", "a quantization backend", "quantize", "quantize=gguf | torchao"
    )
    backend.check()
    return backend
