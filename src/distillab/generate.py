"""``distillab-generate``: a model (the teacher-to-be) writes a corpus from prompts (sequence-level KD
data).

distillab-generate                          # 64 GSM8K-train questions, greedy, 128 new tokens
distillab-distill data=teacher_generated data.source.files=<printed path>
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from distillab.config import to_plain
from distillab.data.corpus import read_documents
from distillab.data.paths import resolve_data_dir
from distillab.data.teacher_generated import GenerationSettings, generate_corpus
from distillab.entry import app_boundary, hydra_app
from distillab.evaluation.suite import model_fingerprint
from distillab.models.loading import load_from_config
from distillab.precision import cache_tag
from distillab.process import configure_process


@app_boundary
def run(cfg: DictConfig) -> Path:
    configure_process(cfg)
    settings = GenerationSettings(**to_plain(cfg.generation))
    settings.validate()
    prompts = read_documents(to_plain(cfg.prompts), resolve_data_dir(cfg.paths.data_dir), "prompts")
    if cfg.get("max_prompts"):
        prompts = prompts[: int(cfg.max_prompts)]
    model, tokenizer = load_from_config(cfg, "model")
    out_dir = Path(cfg.paths.cache_dir) / "generated"
    identity = model_fingerprint(model) + cache_tag(model)  # a bf16 teacher writes another corpus
    path, reused = generate_corpus(model, tokenizer, prompts, out_dir, settings, identity)
    print(f"{'reused' if reused else 'wrote'} {len(prompts)} teacher responses: {path}")
    print(f"train on it: distillab-distill data=teacher_generated data.source.files={path}")
    return path


main = hydra_app("generate", run)


if __name__ == "__main__":
    main()
