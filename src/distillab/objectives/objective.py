"""The training objective: a weighted sum of named terms, each of which is logged on its own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from distillab.config import build_target
from distillab.errors import DistillabError

# The shipped terms, imported so term_classes() lists them (configs name them by _target_).
from distillab.objectives import attention, contrastive, cross_tokenizer, hidden, lens  # noqa: F401
from distillab.objectives.signals import (
    CROSS_TEACHER,
    SAME_TOKENIZER,
    TEACHER_MODEL,
    TEACHER_TOPK,
    TermInputs,
    offered,
)
from distillab.objectives.terms import Term


class Objective(nn.Module):
    """``loss = Σ_i w_i · term_i``. Returns the total and every unweighted term for logging."""

    def __init__(self, terms: Mapping[str, Term], weights: Mapping[str, float]):
        super().__init__()
        self.terms = nn.ModuleDict(dict(terms))
        self.weights = {name: float(weights[name]) for name in self.terms}

    def weighted(self) -> list[tuple[str, Term]]:
        """The terms that count (weight > 0), by name."""
        return [(name, term) for name, term in self.terms.items() if self.weights[name] != 0]

    def reads(self, kind: str | None = None) -> frozenset[str]:
        """The signals the weighted terms read (on a batch of ``kind``: those evaluated there)."""
        return frozenset().union(
            *(t.reads for _, t in self.weighted() if kind is None or offered(t.reads, kind))
        )

    @property
    def needs_teacher(self) -> bool:
        """A term reads the teacher model's outputs (the run must load it)."""
        return bool(self.reads() & TEACHER_MODEL)

    @property
    def needs_cache(self) -> bool:
        """A term reads the offline teacher top-k cache."""
        return TEACHER_TOPK in self.reads()

    def cache_readers(self) -> dict[str, float]:
        """``{term name: temperature}`` of the weighted terms that read the offline top-k cache."""
        return {name: term.temperature for name, term in self.weighted() if TEACHER_TOPK in term.reads}

    @property
    def cross_tokenizer(self) -> bool:
        """A term reads the teacher through its own tokenizer: the step re-tokenizes for it."""
        return CROSS_TEACHER in self.reads()

    def attach_tokenizers(self, student_tok, teacher_tok) -> None:
        """Another tokenizer's teacher: no weighted term may pair teacher and student position by position."""
        for name, term in self.weighted():
            if CROSS_TEACHER in term.reads:
                term.attach_tokenizers(student_tok, teacher_tok)
            elif term.reads & SAME_TOKENIZER:
                raise DistillabError(
                    f"objective.terms.{name}: {type(term).__name__} compares teacher and student position "
                    "by position, which needs one tokenizer; next to cross_kd, only ce (no teacher) can run"
                )

    def setup(self, student: nn.Module, teacher: nn.Module | None) -> list[str]:
        """Let each term see the models (layer maps, projections); return one line per term."""
        lines = []
        for name, term in self.weighted():
            if term.reads & TEACHER_MODEL and teacher is None:
                raise DistillabError(f"objective.terms.{name}: needs a teacher, but none is configured")
            try:
                term.setup(student, teacher)
            except DistillabError as err:
                raise DistillabError(f"objective.terms.{name}: {err}") from None
            lines.append(f"{name} (weight {self.weights[name]:g}): {term.describe() or type(term).__name__}")
        return lines

    def teardown(self, student: nn.Module, teacher: nn.Module | None) -> None:
        for term in self.terms.values():
            term.teardown(student, teacher)

    def forward(self, inputs: TermInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Every weighted term whose signals this kind of batch carries (signals.ABSENT_ON: no hard
        labels on the student's own samples, no cached teacher on validation blocks), each given
        only the signals it declared."""
        values: dict[str, torch.Tensor] = {}
        total = inputs.mask.new_zeros((), dtype=torch.float32)
        for name, term in self.weighted():
            if offered(term.reads, inputs.kind):
                values[name] = term(inputs.view(term.reads))
                total = total + self.weights[name] * values[name]
        return total, values


def build_objective(terms_cfg: Mapping[str, Any]) -> Objective:
    """Build from config ``{name: {_target_: <term class>, weight: w, **term_kwargs}}``: each term's
    ``_target_`` names its class (``conf/objective/*.yaml``), built by ``hydra.utils.instantiate``."""
    if not terms_cfg:
        raise DistillabError("objective.terms: empty; give at least one term, e.g. ce: {weight: 1.0}")
    terms, weights = {}, {}
    for name, spec in terms_cfg.items():
        spec = dict(spec or {})
        weight = spec.pop("weight", 1.0)
        if weight is None or float(weight) < 0:
            raise DistillabError(f"objective.terms.{name}.weight: must be >= 0, got {weight}")
        hint = f"name the term's class, one of {', '.join(term_classes())} (each preset in conf/objective/ shows its terms)"
        terms[name] = build_target(spec, f"objective.terms.{name}", "a loss term", "reads", hint)
        weights[name] = float(weight)
    if not any(weights.values()):
        raise DistillabError(
            "objective.terms: every weight is 0; nothing would train (give one term a weight > 0)"
        )
    return Objective(terms, weights)


def term_classes() -> list[str]:
    """Import paths of the loss terms distillab ships (what ``_target_`` may name)."""
    found, todo = [], list(Term.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.__module__.startswith("distillab."):
            found.append(f"{cls.__module__}.{cls.__qualname__}")
    return sorted(found)
