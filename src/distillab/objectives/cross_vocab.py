"""Distances between next-token distributions over two different vocabularies (pure functions).

- :func:`uld_distance` — Universal Logit Distillation (Boizard et al., arXiv 2402.12030): sort each
  distribution's probabilities in decreasing order, pad the shorter with zeros, L1 distance. It
  needs no token correspondence (it compares the shapes of the distributions, not which token gets
  which mass).
- :func:`hybrid_distance` — the exact divergence where the vocabularies agree, ULD where they do
  not (TRL's GOLD trainer is the anchor). Tokens with the same text in both vocabularies (``" the"``
  in each) are *shared*. The exact part compares the two distributions coarsened to the shared
  tokens plus one bucket holding all other mass: a proper distribution on each side, so any
  divergence of :mod:`divergences` applies and the total mass stays constrained (GOLD compares the
  unnormalised shared probabilities instead). The rest is ULD on the unshared probabilities.

Teacher quantities are computed once, without gradients, in vocabulary chunks by the caller
(:class:`TeacherSummary`), so a 262k-entry teacher row never meets the student's graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distillab.objectives.divergences import Divergence


@dataclass
class TeacherSummary:
    """What the losses need of the teacher's tempered distribution at N aligned positions."""

    sorted_probs: (
        torch.Tensor
    )  # (N, k): the largest probabilities (of the unshared tokens for hybrid), decreasing
    shared_logp: torch.Tensor | None = None  # (N, S): log-probabilities of the shared tokens (hybrid)
    rest_logp: torch.Tensor | None = None  # (N,): log of the mass on unshared tokens (hybrid)


def top_sorted(probs: torch.Tensor, k: int | None) -> torch.Tensor:
    """The ``k`` largest entries of each row, decreasing (all of them, sorted, when k is None)."""
    if k is None or k >= probs.shape[-1]:
        return probs.sort(dim=-1, descending=True).values
    return probs.topk(k, dim=-1).values


def sorted_l1(student_sorted: torch.Tensor, teacher_sorted: torch.Tensor) -> torch.Tensor:
    """``Σ_r |s_(r) − t_(r)|`` over ranks, the shorter row padded with zeros. ``(N, a), (N, b) -> (N,)``."""
    width = max(student_sorted.shape[-1], teacher_sorted.shape[-1])
    s = F.pad(student_sorted, (0, width - student_sorted.shape[-1]))
    t = F.pad(teacher_sorted, (0, width - teacher_sorted.shape[-1]))
    return (s - t).abs().sum(-1)


def uld_distance(
    student_probs: torch.Tensor,
    teacher_sorted: torch.Tensor,
    top_k: int | None = None,
    student_mass: torch.Tensor | None = None,
    teacher_mass: torch.Tensor | None = None,
) -> torch.Tensor:
    """ULD between student probabilities ``(N, V_s)`` and the teacher's sorted top ``(N, k_t)``.

    ``top_k`` None: exact (every rank). Otherwise ranks beyond ``top_k`` enter through the difference
    of the left-out masses, ``|tail_s − tail_t|``, a lower bound of their exact contribution (the
    triangle inequality), so the value is exact when the tails carry no mass and never overstated.
    ``*_mass``: each row's total (1 for a whole distribution; less for the unshared part in hybrid).
    """
    student_sorted = top_sorted(student_probs, top_k)
    distance = sorted_l1(student_sorted, teacher_sorted)
    if top_k is None:
        return distance
    s_mass = student_probs.sum(-1) if student_mass is None else student_mass
    t_mass = torch.ones_like(s_mass) if teacher_mass is None else teacher_mass
    tail = (s_mass - student_sorted.sum(-1)) - (t_mass - teacher_sorted.sum(-1))
    return distance + tail.abs()


def coarsened(logp: torch.Tensor, shared_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, V)`` log-probabilities -> (shared tokens' log-probabilities ``(N, S)``, log of the
    remaining mass ``(N,)``), the rest computed by logsumexp over the unshared tokens (stable)."""
    shared = logp.index_select(-1, shared_ids)
    unshared = logp.index_fill(-1, shared_ids, float("-inf"))
    return shared, torch.logsumexp(unshared, dim=-1)


def hybrid_distance(
    student_logp: torch.Tensor,
    teacher: TeacherSummary,
    student_shared_ids: torch.Tensor,
    divergence: Divergence,
    top_k: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row ``(exact divergence on the coarsening, ULD on the unshared mass)``, each ``(N,)``.

    ``divergence(teacher_logp, student_logp)`` over the S + 1 outcomes (shared tokens + rest);
    the ULD part compares the unshared probabilities (each side's row sums to its rest mass).
    The caller weighs the two.
    """
    s_shared, s_rest = coarsened(student_logp, student_shared_ids)
    exact = divergence(
        torch.cat([teacher.shared_logp, teacher.rest_logp[:, None]], dim=-1),
        torch.cat([s_shared, s_rest[:, None]], dim=-1),
    )
    s_unshared = student_logp.exp().index_fill(-1, student_shared_ids, 0.0)
    rest = uld_distance(
        s_unshared,
        teacher.sorted_probs,
        top_k,
        student_mass=s_rest.exp(),
        teacher_mass=teacher.rest_logp.exp(),
    )
    return exact, rest


def summarize_teacher(
    teacher_logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    teacher_shared_ids: torch.Tensor | None = None,
) -> TeacherSummary:
    """The teacher's tempered distribution at some rows ``(n, V_t)`` reduced to what the losses
    need: sorted top-k probabilities (of the unshared tokens when ``teacher_shared_ids`` is given),
    and for hybrid the shared log-probabilities and the rest's log-mass."""
    logp = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if teacher_shared_ids is None:
        return TeacherSummary(top_sorted(logp.exp(), top_k))
    shared, rest = coarsened(logp, teacher_shared_ids)
    unshared = logp.exp().index_fill(-1, teacher_shared_ids, 0.0)
    return TeacherSummary(top_sorted(unshared, top_k), shared, rest)
