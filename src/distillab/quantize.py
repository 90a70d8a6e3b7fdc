"""``distillab-quantize``: quantize (always the last stage) -> bytes on disk, tokens/s, quality, retention.

Thin entry point: ``main`` is Hydra's; ``run(cfg)`` does the work and returns the results.

    distillab-quantize quantize.gguf_type=q4_0                    # GGUF via the gguf package
    distillab-quantize quantize.gguf_type=q4_k_m                  # GGUF via llama.cpp (extra gguf-runtime)
    distillab-quantize quantize.backend=torchao quantize.bits=8   # in-process torchao weight-only

GGUF quality is measured the way a user would get it back: the file is de-quantized through
transformers' GGUF loader and run through the same lm-eval suite as every other model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from distillab.app_run import AppRun
from distillab.config import to_plain
from distillab.entry import hydra_app
from distillab.errors import DistillabError
from distillab.evaluation.footprint import bytes_on_disk, decode_tokens_per_second
from distillab.files import atomic_path
from distillab.models.loading import count_parameters, load_model
from distillab.models.spec import ModelSpec
from distillab.quantization import llama_cpp
from distillab.quantization.gguf_export import PYTHON_TYPES, check_architecture, export_gguf
from distillab.quantization.weight_only import check_bits, quantize_weights, state_dict_bytes

log = logging.getLogger("distillab")

BACKENDS = ("gguf", "torchao")


def check_config(q: DictConfig) -> None:
    """Every user mistake in ``quantize.*`` fails here, before a model is loaded."""
    if q.backend not in BACKENDS:
        raise DistillabError(f"quantize.backend: unknown {q.backend!r}; valid: {', '.join(BACKENDS)}")
    if q.backend == "torchao":
        check_bits(int(q.bits), int(q.group_size))
    elif q.gguf_type in llama_cpp.LLAMA_CPP_TYPES:
        llama_cpp.require_llama_cpp()
    elif q.gguf_type not in PYTHON_TYPES:
        valid = ", ".join([*PYTHON_TYPES, *llama_cpp.LLAMA_CPP_TYPES])
        raise DistillabError(f"quantize.gguf_type: unknown {q.gguf_type!r}; valid: {valid}")


def source_bytes(spec: ModelSpec, model) -> int:
    """Bytes of the input as saved: its folder's weight files or its GGUF file (hub ids and in-memory
    models: the fp32 state dict, as they would be saved)."""
    path = Path(spec.name_or_path)
    if spec.gguf_file and (path / spec.gguf_file).is_file():
        return bytes_on_disk(path / spec.gguf_file)
    if path.is_dir() and not spec.gguf_file:
        return bytes_on_disk(path)
    return state_dict_bytes(model)


# Text with digits, spaces, contractions and newlines: where pre-tokenizer rules differ.
TOKENIZER_PROBE = "In 1997, 12,345 people paid $3.50 -- don't   they?\n\n  Yes. 北京 café"


def quantize_gguf(cfg: DictConfig, model, tokenizer, run_dir: Path) -> tuple[Path, Any]:
    """Export, re-load through transformers (de-quantized), return ``(file, model)``.

    The re-loaded model is evaluated with the input's tokenizer: the weights are what was quantized.
    transformers rebuilds a tokenizer from the GGUF with its own pre-tokenizer rules; a warning says
    when it would split text differently from the input's (then llama.cpp users may see different
    tokens, while the quality numbers here stay comparable).
    """
    q = cfg.quantize
    check_architecture(model)
    out = run_dir / f"model-{q.gguf_type}.gguf"
    if q.gguf_type in PYTHON_TYPES:
        export_gguf(model, tokenizer, out, q.gguf_type, pre_tokenizer=q.pre_tokenizer)
    else:
        f16 = export_gguf(model, tokenizer, run_dir / "model-f16.gguf", "f16", pre_tokenizer=q.pre_tokenizer)
        llama_cpp.quantize_gguf(f16, out, q.gguf_type, threads=int(cfg.threads))
        f16.unlink()  # an intermediate: only the deployable file stays
    quantized, rebuilt = load_model(ModelSpec(name_or_path=str(run_dir), gguf_file=out.name))
    if rebuilt(TOKENIZER_PROBE).input_ids != tokenizer(TOKENIZER_PROBE).input_ids:
        log.warning(
            "%s: the tokenizer transformers rebuilds from it splits text differently from the input's "
            "(quantize.pre_tokenizer=%s); quality is measured with the input's tokenizer",
            out.name,
            q.pre_tokenizer,
        )
    return out, quantized


def run(cfg: DictConfig) -> dict[str, Any]:
    app = AppRun(cfg)
    q = cfg.quantize
    check_config(q)
    spec = ModelSpec.from_config(to_plain(cfg.model))
    model, tokenizer = load_model(spec)
    app.open_loggers()
    # The reference is evaluated before anything is quantized (torchao quantizes in place).
    if cfg.get("teacher"):
        ref, ref_tok = load_model(ModelSpec.from_config(to_plain(cfg.teacher), key="teacher"), key="teacher")
        app.evaluate(ref, ref_tok, "teacher", cached=True)
        ref_params = count_parameters(ref)
        del ref
    else:
        app.evaluate(model, tokenizer, "teacher", cached=True)
        ref_params = count_parameters(model)
    params, input_bytes = count_parameters(model), source_bytes(spec, model)
    app.results |= {
        "model": spec.name_or_path,
        "backend": q.backend,
        "type": q.gguf_type if q.backend == "gguf" else f"int{q.bits}",
        "params": {"teacher": ref_params, "input": params, "student": params},
    }
    artifact, quantized, app.results["runtime"], speed = quantize_and_time(cfg, model, tokenizer, app)
    del model
    student_bytes = bytes_on_disk(artifact)
    app.results |= {
        "artifact": str(artifact),
        "bytes": {"input": input_bytes, "student": student_bytes},
        "tokens_per_s": speed,
    }
    app.evaluate(quantized, tokenizer, "student")
    header = (
        f"## {cfg.experiment_name}: {app.results['type']} ({q.backend}), {input_bytes / 1e6:.1f} MB -> "
        f"{student_bytes / 1e6:.1f} MB on disk, decode {speed:.1f} tokens/s ({app.results['runtime']})"
    )
    return app.finish(header, artifacts={"quantized model": artifact})


def quantize_and_time(cfg: DictConfig, model, tokenizer, app: AppRun) -> tuple[Path, Any, str, float]:
    """Quantize with the configured backend; ``(artifact, model to evaluate, runtime, decode tokens/s)``."""
    q = cfg.quantize
    prompt_ids = tokenizer(cfg.speed.prompt, return_tensors="pt").input_ids
    if q.backend == "gguf":
        artifact, quantized = quantize_gguf(cfg, model, tokenizer, app.run_dir)
        if llama_cpp.is_available():
            text, speed = llama_cpp.generate(
                artifact, cfg.speed.prompt, int(cfg.speed.new_tokens), int(cfg.threads)
            )
            app.results["sample"] = text
            return artifact, quantized, "llama.cpp", speed
        speed = decode_tokens_per_second(quantized, prompt_ids, int(cfg.speed.new_tokens))
        runtime = "transformers (de-quantized to float32; install gguf-runtime for llama.cpp)"
        return artifact, quantized, runtime, speed
    quantized = quantize_weights(model, int(q.bits), int(q.group_size))
    artifact = app.run_dir / f"model-int{q.bits}.pt"
    with atomic_path(artifact) as tmp:  # never a truncated file that looks complete
        torch.save(quantized.state_dict(), tmp)
    speed = decode_tokens_per_second(quantized, prompt_ids, int(cfg.speed.new_tokens))
    return artifact, quantized, "transformers + torchao (CPU)", speed


main = hydra_app("quantize", run)


if __name__ == "__main__":
    main()
