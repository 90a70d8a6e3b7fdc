"""``distillab-quantize``: quantize (always the last stage) -> bytes on disk, tokens/s, quality, retention.

Thin entry point: ``main`` is Hydra's; ``run(cfg)`` does the work and returns the results.

    distillab-quantize quantize.gguf_type=q4_0                    # GGUF via the gguf package
    distillab-quantize quantize.gguf_type=q4_k_m                  # GGUF via llama.cpp (extra gguf-runtime)
    distillab-quantize quantize=torchao quantize.bits=8           # in-process torchao weight-only

The backends (``quantization/backends.py``, the ``quantize`` config group): GGUF quality is measured
the way a user would get it back, de-quantized through transformers' GGUF loader and run through the
same lm-eval suite as every other model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from distillab.app_run import AppRun
from distillab.config import to_plain
from distillab.entry import app_boundary, hydra_app
from distillab.evaluation import runtimes
from distillab.evaluation.footprint import bytes_on_disk
from distillab.evaluation.llama_cpp_runtime import evaluate_gguf
from distillab.evaluation.retention import primary_metrics, retention_results
from distillab.evaluation.runtimes import runtime_differences
from distillab.models.loading import load_model, load_teacher
from distillab.models.spec import ModelSpec
from distillab.quantization.backends import build_backend
from distillab.quantization.weight_only import state_dict_bytes


def source_bytes(spec: ModelSpec, model) -> int:
    """Bytes of the input as saved: its folder's weight files or its GGUF file (hub ids and in-memory
    models: the fp32 state dict, as they would be saved)."""
    path = Path(spec.name_or_path)
    if spec.gguf_file and (path / spec.gguf_file).is_file():
        return bytes_on_disk(path / spec.gguf_file)
    if path.is_dir() and not spec.gguf_file:
        return bytes_on_disk(path)
    return state_dict_bytes(model)


@app_boundary
def run(cfg: DictConfig) -> dict[str, Any]:
    app = AppRun(cfg)
    backend = build_backend(cfg.quantize)
    spec = ModelSpec.from_config(to_plain(cfg.model))
    model, tokenizer = load_model(spec)
    app.open_loggers()
    # The reference is evaluated before anything is quantized (torchao quantizes in place).
    ref, ref_tok = load_teacher(cfg, model, tokenizer)
    app.evaluate(ref, ref_tok, "teacher", cached=True)
    ref_params = ref.num_parameters()
    del ref
    params, input_bytes = model.num_parameters(), source_bytes(spec, model)
    app.results |= {
        "model": spec.name_or_path,
        "backend": backend.name,
        "type": backend.label,
        "params": {"teacher": ref_params, "input": params, "student": params},
    }
    speed = cfg.speed
    out = backend.quantize(
        model, tokenizer, app.run_dir, int(cfg.threads), speed.prompt, int(speed.new_tokens)
    )
    del model
    student_bytes = bytes_on_disk(out.artifact)
    app.results |= {
        "runtime": out.runtime,
        **({"sample": out.sample} if out.sample is not None else {}),
        "artifact": str(out.artifact),
        "bytes": {"input": input_bytes, "student": student_bytes},
        "tokens_per_s": out.tokens_per_s,
    }
    app.evaluate(out.model, tokenizer, "student")
    out.model = None  # freed before llama.cpp loads the file
    header = (
        f"## {cfg.experiment_name}: {backend.label} ({backend.name}), {input_bytes / 1e6:.1f} MB -> "
        f"{student_bytes / 1e6:.1f} MB on disk, decode {out.tokens_per_s:.1f} tokens/s ({out.runtime})"
    )
    if app.eval_cfg and getattr(backend, "scores_in_llama_cpp", lambda: False)():
        header += "\n\n" + score_in_llama_cpp(app, out.artifact, tokenizer, int(cfg.threads))
    return app.finish(header, artifacts={"quantized model": out.artifact})


def score_in_llama_cpp(app: AppRun, artifact: Path, tokenizer, threads: int) -> str:
    """The suite on ``artifact`` in llama.cpp, kept as ``student_llama_cpp`` next to the torch score
    (``student``), with its retention and the per-metric difference; returns the report's table."""
    with app.evaluating():
        evaluation, runtime = evaluate_gguf(
            artifact, tokenizer, app.eval_cfg, app.run_dir / "llama_cpp", app.cfg.paths.data_dir, threads
        )
    key = "student_llama_cpp"
    app.results[key], app.items[key] = evaluation.metrics, evaluation.items
    primary = primary_metrics(app.eval_cfg)
    differences = runtime_differences(
        app.results["student"], app.items.get("student"), evaluation.metrics, evaluation.items, primary
    )
    rows = app.against_teacher(key)
    app.results["runtimes"] = {
        "teacher": "torch",
        "student": "torch (de-quantized by transformers)",
        key: runtime,
    }
    app.results["llama_cpp"] = {"runtime": runtime, "vs_torch": differences, **retention_results(rows)}
    return runtimes.markdown(differences, runtime)


main = hydra_app("quantize", run)


if __name__ == "__main__":
    main()
