"""Sequence-level KD data: a corpus written by the teacher from prompts (the Phi recipe).

``generate_corpus`` runs greedy or sampled generation over prompts (e.g. GSM8K train questions)
and writes jsonl rows ``{"prompt", "response", "text"}`` next to a ``.settings.json`` that records
the teacher fingerprint and generation settings. The file name is a hash of both, so the same
request is served from disk and any change writes a new file. The result is an ordinary jsonl
corpus (``data.source.files=<path>``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from distillab.errors import DistillabError
from distillab.files import atomic_path, digest, json_digest, write_json_atomic
from distillab.precision import in_run_precision


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 8

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise DistillabError(f"generate.max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and self.temperature <= 0:
            raise DistillabError(f"generate.temperature: must be > 0 when sampling, got {self.temperature}")


def corpus_path(
    out_dir: Path, model_fingerprint: str, prompts: list[str], settings: GenerationSettings
) -> Path:
    key = json_digest([model_fingerprint, digest("\x00".join(prompts)), asdict(settings)], 16)
    return out_dir / f"teacher-{key}.jsonl"


@torch.no_grad()
@in_run_precision
def generate_responses(model, tokenizer, prompts: list[str], settings: GenerationSettings) -> list[str]:
    """Responses (continuations only) for ``prompts``, batched with left padding."""
    settings.validate()
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # generation continues on the right
    model.eval()
    torch.manual_seed(settings.seed)
    responses: list[str] = []
    try:
        for start in tqdm(range(0, len(prompts), settings.batch_size), desc="teacher generation"):
            batch = tokenizer(prompts[start : start + settings.batch_size], return_tensors="pt", padding=True)
            batch = batch.to(next(model.parameters()).device)
            kwargs = (
                {"temperature": settings.temperature, "top_p": settings.top_p} if settings.do_sample else {}
            )
            out = model.generate(
                **batch,
                max_new_tokens=settings.max_new_tokens,
                do_sample=settings.do_sample,
                pad_token_id=tokenizer.pad_token_id,
                **kwargs,
            )
            new_tokens = out[:, batch["input_ids"].shape[1] :]
            responses.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return responses


def generate_corpus(
    model, tokenizer, prompts: list[str], out_dir: Path, settings: GenerationSettings, model_fingerprint: str
) -> tuple[Path, bool]:
    """Write (or reuse) the teacher's corpus; returns ``(path, reused)``."""
    if not prompts:
        raise DistillabError("generate.prompts: no prompts to generate from")
    path = corpus_path(out_dir, model_fingerprint, prompts, settings)
    if path.is_file():
        return path, True
    responses = generate_responses(model, tokenizer, prompts, settings)
    settings_doc = {"teacher_fingerprint": model_fingerprint, "num_prompts": len(prompts), **asdict(settings)}
    write_json_atomic(path.with_suffix(".settings.json"), settings_doc)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:  # appears only when complete
        for prompt, response in zip(prompts, responses, strict=True):
            fh.write(json.dumps({"prompt": prompt, "response": response, "text": prompt + response}) + "\n")
    return path, False
