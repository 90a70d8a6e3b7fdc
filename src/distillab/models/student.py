"""Students made from the teacher: a copy with layers removed, or its architecture made smaller
(random init or initialised from teacher layers); and the vocabulary check logit distillation needs.
Which student a run builds: ``training/students.py`` (the ``student/`` config group)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from distillab.errors import DistillabError
from distillab.models.surgery import (
    TEACHER_LAYERS_KEY,
    decoder_layers,
    evenly_spaced,
    remove_layers,
    validate_removal,
)

log = logging.getLogger(__name__)


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
