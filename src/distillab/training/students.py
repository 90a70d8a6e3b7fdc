"""Student kinds. Each ``conf/student/*.yaml`` names one of these classes by ``_target_``;
``distillab-distill`` instantiates it and calls ``build(teacher, tokenizer, calibration)``, which
returns ``(student, its tokenizer)``.

- :class:`DropLayers`: the teacher with whole layers removed (explicit indices, evenly spaced, or the
  lowest-scoring by a layer score on calibration blocks of the run's training data).
- :class:`SmallerConfig`: the teacher's architecture with config overrides, random init or
  initialised from chosen teacher layers.
- :class:`Pretrained`: any model spec (another tokenizer too: ``objective=cross_kd``).

The surgery itself is in ``models/student.py`` and ``models/surgery.py``; the layer scores in
``pruning/layer_scores.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedModel

from distillab.config import build_target
from distillab.errors import DistillabError
from distillab.models.loading import load_model
from distillab.models.spec import ModelSpec
from distillab.models.student import drop_layers_student, smaller_student
from distillab.models.surgery import remove_layers
from distillab.pruning.layer_scores import ScoreInputs, least_important
from distillab.pruning.scores import check_score

log = logging.getLogger(__name__)

Calibration = Callable[[int], list[torch.Tensor]]  # n -> batches of n calibration blocks


@dataclass
class DropLayers:
    remove: list[int] | None = None  # explicit indices win over a score
    num_remove: int | None = None
    score: str | None = None  # null: evenly spaced
    calibration_blocks: int = 16

    def build(self, teacher: PreTrainedModel, tokenizer, calibration: Calibration | None = None):
        remove = self.remove
        if self.score is not None and remove is None:
            remove = self.scored_removal(teacher, calibration)
        return drop_layers_student(teacher, remove, self.num_remove), tokenizer

    def scored_removal(self, teacher: PreTrainedModel, calibration: Calibration | None) -> list[int]:
        """The ``num_remove`` layers with the lowest ``score`` on ``calibration_blocks`` blocks of the
        run's training data (the same choice ``distillab-prune`` makes one-shot)."""
        # a student is cut by the scores of one calibration pass of the teacher; the removal scores
        # (ppl_drop, benchmark_drop) and iterative removal live in distillab-prune
        score = check_score(self.score, "student")  # removal scores and iterative cuts: distillab-prune
        num_layers = teacher.config.num_hidden_layers
        if self.num_remove is None or not 0 < int(self.num_remove) < num_layers:
            raise DistillabError(
                f"student.num_remove: {self.num_remove} with student.score={self.score}; valid: "
                f"1..{num_layers - 1} (how many layers the score removes)"
            )
        if calibration is None:
            raise DistillabError(
                "student.score: this entry point gives no calibration data; use distillab-distill"
            )
        scores = score.compute(teacher, ScoreInputs(calibration(int(self.calibration_blocks))))
        remove = least_important(scores, int(self.num_remove))
        log.info(
            "student: %s scores %s -> removing layers %s", self.score, [round(x, 4) for x in scores], remove
        )
        return remove


@dataclass
class SmallerConfig:
    overrides: dict[str, Any] = field(default_factory=dict)
    init_layers: list[int] | None = None
    seed: int = 0

    def build(self, teacher: PreTrainedModel, tokenizer, calibration: Calibration | None = None):
        return smaller_student(teacher, self.overrides or {}, self.init_layers, self.seed), tokenizer


@dataclass
class Pretrained:
    model: dict[str, Any] = field(default_factory=dict)  # a model spec (conf/model/*.yaml keys)
    remove: list[int] | None = None  # decoder layers to cut from it first

    def build(self, teacher: PreTrainedModel, tokenizer, calibration: Calibration | None = None):
        model, model_tok = load_model(
            ModelSpec.from_config(self.model, key="student.model"), key="student.model"
        )
        if self.remove:
            model = remove_layers(model, list(self.remove), inplace=True)
        return model.requires_grad_(True).train(), model_tok


def build_student(teacher: PreTrainedModel, cfg, tokenizer=None, calibration: Calibration | None = None):
    """``(student, tokenizer)`` from a ``student`` config (its ``_target_`` is one of the classes above)."""
    kind = build_target(
        cfg, "student", "a student kind", "build", "student=drop_layers | smaller_config | pretrained"
    )
    return kind.build(teacher, tokenizer, calibration)
