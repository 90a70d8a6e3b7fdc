"""Build the student from the teacher and a ``student/`` config.

Kinds: ``drop_layers`` (teacher copy with layers removed: explicit indices, evenly spaced, or the
lowest-scoring by a layer score on calibration blocks),
``smaller_config`` (the teacher's config with overrides, random init or initialised from chosen
teacher layers) and ``pretrained`` (any model spec).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from distillab.errors import DistillabError
from distillab.models.loading import load_model
from distillab.models.spec import ModelSpec
from distillab.models.surgery import (
    TEACHER_LAYERS_KEY,
    decoder_layers,
    evenly_spaced,
    remove_layers,
    validate_removal,
)

KINDS = ("drop_layers", "smaller_config", "pretrained")
log = logging.getLogger(__name__)


# Layer scores a student can be cut by: the ones computed from one calibration pass of the teacher.
# The removal scores (ppl_drop, benchmark_drop) and iterative removal live in distillab-prune.
STUDENT_SCORES = ("block_influence", "angular", "lens_kl")


def build_student(
    teacher: PreTrainedModel,
    cfg: Mapping[str, Any],
    tokenizer=None,
    calibration: Callable[[int], list[torch.Tensor]] | None = None,
):
    """Return ``(student, tokenizer)``; the tokenizer is the teacher's unless ``pretrained``.

    ``calibration(n)``: batches of ``n`` calibration blocks, for a ``drop_layers`` cut by ``score``.
    """
    kind = cfg.get("kind")
    if kind == "drop_layers":
        remove = cfg.get("remove")
        if cfg.get("score") is not None and remove is None:  # explicit indices win over a score
            remove = scored_removal(teacher, cfg, calibration)
        return drop_layers_student(teacher, remove, cfg.get("num_remove")), tokenizer
    if kind == "smaller_config":
        return smaller_student(
            teacher, cfg.get("overrides") or {}, cfg.get("init_layers"), cfg.get("seed", 0)
        ), tokenizer
    if kind == "pretrained":
        model, model_tok = load_model(
            ModelSpec.from_config(cfg.get("model") or {}, key="student.model"), key="student.model"
        )
        remove = cfg.get("remove")  # e.g. the 24-layer cut of a student taught by another model
        if remove:
            model = remove_layers(model, list(remove), inplace=True)
        return model.requires_grad_(True).train(), model_tok
    raise DistillabError(f"student.kind: unknown {kind!r}; valid: {', '.join(KINDS)}")


def scored_removal(teacher: PreTrainedModel, cfg: Mapping[str, Any], calibration) -> list[int]:
    """The ``num_remove`` layers with the lowest ``score`` on ``calibration_blocks`` blocks of the
    run's training data (the same choice ``distillab-prune`` makes one-shot)."""
    from distillab.pruning.layer_scores import activation_layer_scores, least_important

    score = cfg["score"]
    if score not in STUDENT_SCORES:
        raise DistillabError(
            f"student.score: {score!r} is not one of {', '.join(STUDENT_SCORES)} (null: evenly spaced); "
            "removal scores and iterative cuts: distillab-prune"
        )
    num_layers, num_remove = teacher.config.num_hidden_layers, cfg.get("num_remove")
    if num_remove is None or not 0 < int(num_remove) < num_layers:
        raise DistillabError(
            f"student.num_remove: {num_remove} with student.score={score}; valid: 1..{num_layers - 1} "
            "(how many layers the score removes)"
        )
    num_blocks = int(cfg.get("calibration_blocks", 16))
    if num_blocks < 1:
        raise DistillabError(f"student.calibration_blocks: must be >= 1, got {num_blocks}")
    if calibration is None:
        raise DistillabError(
            "student.score: this entry point gives no calibration data; use distillab-distill"
        )
    scores = activation_layer_scores(teacher, calibration(num_blocks), [score])[score]
    remove = least_important(scores, int(num_remove))
    log.info("student: %s scores %s -> removing layers %s", score, [round(x, 4) for x in scores], remove)
    return remove


def drop_layers_student(teacher: PreTrainedModel, remove=None, num_remove=None) -> PreTrainedModel:
    """Teacher copy without ``remove`` (explicit indices) or ``num_remove`` evenly spaced layers."""
    num_layers = teacher.config.num_hidden_layers
    if remove is None and num_remove is None:
        raise DistillabError("student: give remove (layer indices) or num_remove (evenly spaced)")
    if remove is None:
        remove = evenly_spaced(num_layers, int(num_remove))
    student = remove_layers(teacher, list(remove))
    return student.requires_grad_(True).train()  # the teacher may already be frozen; its copy must not be


def smaller_student(teacher: PreTrainedModel, overrides: Mapping[str, Any], init_layers=None, seed: int = 0):
    """A model of the teacher's architecture with config ``overrides`` (fewer layers, narrower).

    ``init_layers``: teacher layer indices to copy into the student's layers (needs the same width),
    together with embeddings, final norm and head; ``None`` keeps the random initialisation.
    """
    config = copy.deepcopy(teacher.config)
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise DistillabError(f"student.overrides.{key}: not a field of {type(config).__name__}")
        setattr(config, key, value)
    if "num_hidden_layers" in overrides and getattr(config, "layer_types", None) is not None:
        config.layer_types = config.layer_types[: config.num_hidden_layers]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = AutoModelForCausalLM.from_config(config, dtype=teacher.dtype)
    if init_layers is not None:
        init_layers = validate_removal(
            teacher.config.num_hidden_layers, list(init_layers), "student.init_layers"
        )
        if len(init_layers) != config.num_hidden_layers:
            raise DistillabError(
                f"student.init_layers: {len(init_layers)} indices for {config.num_hidden_layers} student layers"
            )
        _copy_from_teacher(teacher, student, init_layers)
        setattr(student.config, TEACHER_LAYERS_KEY, init_layers)
    return student.train()


def _copy_from_teacher(teacher, student, init_layers: list[int]) -> None:
    t_layers, s_layers = decoder_layers(teacher), decoder_layers(student)
    pairs = [
        (teacher.model.embed_tokens, student.model.embed_tokens),
        (teacher.model.norm, student.model.norm),
    ]
    pairs += [(t_layers[t], s_layers[s]) for s, t in enumerate(init_layers)]
    if not student.config.tie_word_embeddings:
        pairs.append((teacher.lm_head, student.lm_head))
    for src, dst in pairs:
        try:
            dst.load_state_dict(src.state_dict())
        except RuntimeError:
            raise DistillabError(
                "student.init_layers: teacher and student widths differ; initialising from teacher "
                "layers needs the same hidden/intermediate sizes and head counts (drop init_layers)"
            ) from None


def check_vocab_match(teacher, student, teacher_tok, student_tok) -> None:
    """Logit distillation compares distributions over the same vocabulary: fail before training."""
    t_vocab, s_vocab = (
        teacher.get_output_embeddings().weight.shape[0],
        student.get_output_embeddings().weight.shape[0],
    )
    if t_vocab != s_vocab:
        raise DistillabError(
            f"student: vocabulary size {s_vocab} differs from the teacher's {t_vocab}; logit distillation "
            "needs a shared vocabulary (use the teacher's tokenizer, or a ce-only objective)"
        )
    if (
        student_tok is not None
        and teacher_tok is not None
        and student_tok.get_vocab() != teacher_tok.get_vocab()
    ):
        raise DistillabError(
            "student: tokenizer vocabulary differs from the teacher's; logit distillation needs the same tokenizer"
        )
