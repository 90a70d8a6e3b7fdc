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
from distillab.objectives.terms import Term, TermInputs


class Objective(nn.Module):
    """``loss = Σ_i w_i · term_i``. Returns the total and every unweighted term for logging."""

    def __init__(self, terms: Mapping[str, Term], weights: Mapping[str, float]):
        super().__init__()
        self.terms = nn.ModuleDict(dict(terms))
        self.weights = {name: float(weights[name]) for name in self.terms}

    def _any(self, flag: str) -> bool:
        return any(getattr(t, flag) and self.weights[n] != 0 for n, t in self.terms.items())

    @property
    def needs_teacher(self) -> bool:
        return self._any("needs_teacher")

    @property
    def needs_cache(self) -> bool:
        return self._any("needs_cache")

    @property
    def needs_teacher_logits(self) -> bool:
        """A term reads the teacher's full logits; otherwise its final hidden states and head suffice."""
        return self._any("needs_teacher_logits")

    @property
    def cross_tokenizer(self) -> bool:
        """A term reads the teacher through its own tokenizer: the step re-tokenizes for it."""
        return self._any("cross_tokenizer")

    def attach_tokenizers(self, student_tok, teacher_tok) -> None:
        """Cross-tokenizer runs: every weighted term must be cross-capable or need no teacher at all."""
        for name, term in self.terms.items():
            if self.weights[name] == 0:
                continue
            if term.cross_tokenizer:
                term.attach_tokenizers(student_tok, teacher_tok)
            elif term.needs_teacher or term.needs_cache:
                raise DistillabError(
                    f"objective.terms.{name}: {type(term).__name__} compares teacher and student position "
                    "by position, which needs one tokenizer; next to cross_kd, only ce (no teacher) can run"
                )

    @property
    def needs_hidden_states(self) -> bool:
        return self._any("needs_hidden_states")

    @property
    def needs_attentions(self) -> bool:
        return self._any("needs_attentions")

    def setup(self, student: nn.Module, teacher: nn.Module | None) -> list[str]:
        """Let each term see the models (layer maps, projections); return one line per term."""
        lines = []
        for name, term in self.terms.items():
            if self.weights[name] == 0:
                continue
            if term.needs_teacher and teacher is None:
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
        values: dict[str, torch.Tensor] = {}
        total = inputs.student_logits.new_zeros((), dtype=torch.float32)
        for name, term in self.terms.items():
            weight = self.weights[name]
            teacher_missing = (
                inputs.cross is None
                if term.cross_tokenizer
                else inputs.teacher_logits is None and inputs.teacher_final_hidden is None
            )
            if weight == 0 or (term.needs_teacher and teacher_missing):
                continue
            if inputs.on_policy and not term.needs_teacher:  # no CE on the student's own samples
                continue
            if term.needs_cache and inputs.teacher_topk_logp is None:  # e.g. validation blocks: not cached
                continue
            values[name] = term(inputs)
            total = total + weight * values[name]
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
        terms[name] = build_target(spec, f"objective.terms.{name}", "a loss term", "needs_teacher", hint)
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
