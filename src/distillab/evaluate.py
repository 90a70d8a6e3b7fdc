"""``distillab-evaluate``: the eval suite on one model, and retention against a teacher if given."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from distillab.app_run import AppRun
from distillab.entry import app_boundary, hydra_app
from distillab.models.loading import load_from_config


@app_boundary
def run(cfg: DictConfig) -> dict[str, Any]:
    app = AppRun(cfg)
    model, tokenizer = load_from_config(cfg, "model")
    app.open_loggers()
    app.results |= {"model": cfg.model.name_or_path, "params": {"student": model.num_parameters()}}
    app.evaluate(model, tokenizer, "student", cached=True)
    header = ""
    if cfg.get("teacher"):
        teacher, teacher_tok = load_from_config(cfg, "teacher")
        app.evaluate(teacher, teacher_tok, "teacher", cached=True)
        header = f"## {cfg.model.name_or_path} vs {cfg.teacher.name_or_path}"
    return app.finish(header)


main = hydra_app("evaluate", run)


if __name__ == "__main__":
    main()
