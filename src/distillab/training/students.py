"""Student kinds: how the student is made from the run's input ``model``. Each
``conf/student/*.yaml`` names one of these classes by ``_target_``; ``distillab-distill``
instantiates it and calls ``build(model, tokenizer, calibration)``, which returns
``(student, its tokenizer)``. The teacher is another matter: ``teacher`` if the run names one, else
the input model itself.

- :class:`DropLayers`: the model with whole layers removed (explicit indices, evenly spaced, or the
  lowest-scoring by a layer score on calibration blocks of the run's training data).
- :class:`SmallerConfig`: the model's architecture with config overrides, random init or
  initialised from chosen layers of the model.
- :class:`AsIs`: a trainable copy of the whole model (a pretrained student under another teacher,
  self-distillation, or healing a model an earlier stage cut).

The surgery itself is in ``models/student.py`` and ``models/surgery.py``; the layer scores in
``pruning/layer_scores.py``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedModel

from distillab.config import build_target
from distillab.errors import DistillabError
from distillab.models.student import drop_layers_student, smaller_student
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

    def build(self, model: PreTrainedModel, tokenizer, calibration: Calibration | None = None):
        remove = self.remove
        if self.score is not None and remove is None:
            remove = self.scored_removal(model, calibration)
        return drop_layers_student(model, remove, self.num_remove), tokenizer

    def scored_removal(self, model: PreTrainedModel, calibration: Calibration | None) -> list[int]:
        """The ``num_remove`` layers with the lowest ``score`` on ``calibration_blocks`` blocks of the
        run's training data (the same choice ``distillab-prune`` makes one-shot)."""
        # a student is cut by the scores of one calibration pass of the model it is cut from; the removal scores
        # (ppl_drop, benchmark_drop) and iterative removal live in distillab-prune
        score = check_score(self.score, "student")  # removal scores and iterative cuts: distillab-prune
        num_layers = model.config.num_hidden_layers
        if self.num_remove is None or not 0 < int(self.num_remove) < num_layers:
            raise DistillabError(
                f"student.num_remove: {self.num_remove} with student.score={self.score}; valid: "
                f"1..{num_layers - 1} (how many layers the score removes)"
            )
        if calibration is None and score.needs_calibration:
            raise DistillabError(
                "student.score: this entry point gives no calibration data; use distillab-distill"
            )
        blocks = calibration(int(self.calibration_blocks)) if score.needs_calibration else ()
        scores = score.compute(model, ScoreInputs(blocks))
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

    def build(self, model: PreTrainedModel, tokenizer, calibration: Calibration | None = None):
        return smaller_student(model, self.overrides or {}, self.init_layers, self.seed), tokenizer


@dataclass
class AsIs:
    def build(self, model: PreTrainedModel, tokenizer, calibration: Calibration | None = None):
        # a copy: without a `teacher` the input model is also the teacher, which stays frozen
        return copy.deepcopy(model).requires_grad_(True).train(), tokenizer


def build_student(model: PreTrainedModel, cfg, tokenizer=None, calibration: Calibration | None = None):
    """``(student, tokenizer)`` from a ``student`` config (its ``_target_`` is one of the classes above)."""
    kind = build_target(
        cfg, "student", "a student kind", "build", "student=drop_layers | smaller_config | as_is"
    )
    return kind.build(model, tokenizer, calibration)
