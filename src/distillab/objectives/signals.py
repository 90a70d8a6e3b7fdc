"""The signals a loss term can read, by name, and the batches on which each exists.

A term lists what it reads (``Term.reads``). The training step computes exactly the union over the
objective's weighted terms (``training/signal_providers.py`` has one provider per signal) and hands
each term a view holding only what it declared, so reading an undeclared signal fails loudly instead
of working by the accident of another term's declaration.

A new signal is a name here, a provider (``@provides(NAME)``, in ``training/signal_providers.py``
or beside the term that needs it) and a term that lists it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from distillab.errors import DistillabError

STUDENT_LOGITS = "student_logits"  # (B, T, V); position t predicts token t+1
TARGETS = "targets"  # (B, T): the data's next token, -100 where there is none
MASK = "mask"  # (B, T) bool: the next token is real (not padding, not ignored, not past the end)
STUDENT_HIDDEN = "student_hidden"  # per layer (B, T, H); 0 = embeddings, i + 1 = decoder layer i's output
TEACHER_HIDDEN = "teacher_hidden"
# Post-RoPE queries/keys of the layers the attention kernel captures, {layer: {query, key, mask,
# scaling}} (objectives/attention.py), not whole attention matrices.
STUDENT_QK = "student_qk"
TEACHER_QK = "teacher_qk"
TEACHER_LOGITS = "teacher_logits"  # the teacher's whole (B, T, V) logits
# TeacherFinal: the teacher's final hidden states and LM head, from which kd forms logits a chunk of
# positions at a time (objectives/chunked_kd.py); the logits themselves when the whole teacher ran.
TEACHER_FINAL = "teacher_final"
TEACHER_TOPK = "teacher_topk"  # TopK, from the offline teacher cache (data/teacher_cache.py)
# CrossTokenizerInputs (objectives/cross_tokenizer.py): a teacher reading its own tokenizer's tokens.
CROSS_TEACHER = "cross_teacher"

# The kinds of batch a step sees: the training stream, validation blocks, and the student's own
# samples (on-policy distillation, training/on_policy.py).
BATCH_KINDS = ("train", "val", "on_policy")

# Where a signal does not exist by design. A term that reads it is not evaluated on such a batch.
ABSENT_ON: dict[str, frozenset[str]] = {
    TARGETS: frozenset({"on_policy"}),  # the student's own samples are not data: no hard labels
    TEACHER_TOPK: frozenset({"val", "on_policy"}),  # the cache holds the training stream's blocks
}

# Signals that run the teacher model (the cache does not: its teacher ran once, offline).
TEACHER_MODEL = frozenset({TEACHER_LOGITS, TEACHER_FINAL, TEACHER_HIDDEN, TEACHER_QK, CROSS_TEACHER})
# Signals that pair teacher and student position by position, so they need one tokenizer.
SAME_TOKENIZER = frozenset({TEACHER_LOGITS, TEACHER_FINAL, TEACHER_HIDDEN, TEACHER_QK, TEACHER_TOPK})


def offered(reads: Iterable[str], kind: str) -> bool:
    """Does a batch of ``kind`` carry every signal in ``reads``?"""
    return all(kind not in ABSENT_ON.get(name, ()) for name in reads)


@dataclass(frozen=True)
class TeacherFinal:
    """The teacher's last layer: its logits when they were computed, else final hidden states + head."""

    logits: torch.Tensor | None = None
    hidden: torch.Tensor | None = None
    head: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass(frozen=True)
class TopK:
    """The cached teacher distribution: top-k log-probs and ids ``(B, T, k)``, the tail's log mass ``(B, T)``."""

    logp: torch.Tensor
    ids: torch.Tensor
    tail_logp: torch.Tensor


class TermInputs(Mapping[str, Any]):
    """The signals of one batch, by name; ``inputs.student_logits`` reads one as an attribute.

    ``kind`` is one of ``BATCH_KINDS``. Asking for a signal that is not here is one error line
    naming it and what is here.
    """

    def __init__(self, kind: str = "train", **signals: Any):
        if kind not in BATCH_KINDS:
            raise ValueError(f"kind: {kind!r} is not one of {', '.join(BATCH_KINDS)}")
        self.kind = kind
        self._signals = signals

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._signals[name]
        except KeyError:
            here = ", ".join(sorted(self._signals)) or "nothing"
            raise DistillabError(
                f"signal {name!r} is not among this term's inputs ({here}): list it in the term's `reads`"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in ("kind", "_signals"):
            raise AttributeError(f"TermInputs is read-only: use .replace({name}=...) for a changed copy")
        object.__setattr__(self, name, value)

    def __getitem__(self, name: str) -> Any:
        return self._signals[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._signals)

    def __len__(self) -> int:
        return len(self._signals)

    def replace(self, **signals: Any) -> TermInputs:
        """A copy with ``signals`` set."""
        return TermInputs(self.kind, **(self._signals | signals))

    def view(self, names: Iterable[str]) -> TermInputs:
        """The same batch with only ``names`` (those present)."""
        return TermInputs(self.kind, **{n: self._signals[n] for n in names if n in self._signals})
