"""Which student layer aligns with which teacher layer.

A layer map is a list of ``(student_layer, teacher_layer)`` pairs of 0-based decoder-layer indices;
the output of layer ``i`` is ``hidden_states[i + 1]`` in a transformers forward. Kinds:

- ``uniform``: by relative depth, student layer i <-> teacher layer round((i+1)·L_t/L_s) − 1;
- ``last_k``: the last k layers of each, in order;
- ``explicit``: the given pairs;
- ``original``: for a student made by removing teacher layers, each student layer <-> the teacher
  layer it was copied from (recorded at surgery).
"""

from __future__ import annotations

from collections.abc import Sequence

from distillab.errors import DistillabError
from distillab.models.surgery import TEACHER_LAYERS_KEY

KINDS = ("uniform", "last_k", "explicit", "original")
LayerMap = list[tuple[int, int]]


def uniform_map(num_student: int, num_teacher: int) -> LayerMap:
    return [(i, round((i + 1) * num_teacher / num_student) - 1) for i in range(num_student)]


def last_k_map(num_student: int, num_teacher: int, k: int) -> LayerMap:
    if not 1 <= k <= min(num_student, num_teacher):
        raise DistillabError(f"layer_map.k: must be in 1..{min(num_student, num_teacher)}, got {k}")
    return [(num_student - k + j, num_teacher - k + j) for j in range(k)]


def original_map(student_config, num_teacher: int | None = None) -> LayerMap:
    origin = getattr(student_config, TEACHER_LAYERS_KEY, None)
    if origin is None and student_config.num_hidden_layers == num_teacher:
        return [(i, i) for i in range(num_teacher)]  # same depth, never cut (e.g. width-pruned)
    if origin is None:
        raise DistillabError(
            "layer_map.kind=original: the student records no teacher layers (it was not made by layer "
            "removal); use uniform, last_k or explicit"
        )
    return list(enumerate(origin))


def evenly_spaced_interior(pairs: LayerMap, k: int) -> LayerMap:
    """``k`` pairs spread evenly over ``pairs`` without the final one (DistillLens' default)."""
    interior = pairs[:-1]
    if not 1 <= k <= len(interior):
        raise DistillabError(f"layer_map.num_pairs: must be in 1..{len(interior)}, got {k}")
    if k == len(interior):  # all of them (the spacing below would round two picks onto one pair)
        return interior
    return [interior[round((j + 1) * len(interior) / (k + 1)) - 1] for j in range(k)]


def build_layer_map(
    kind: str,
    num_student: int,
    num_teacher: int,
    student_config=None,
    pairs: Sequence[Sequence[int]] | None = None,
    k: int | None = None,
) -> LayerMap:
    if kind == "uniform":
        result = uniform_map(num_student, num_teacher)
    elif kind == "last_k":
        result = last_k_map(num_student, num_teacher, int(k or 1))
    elif kind == "original":
        result = original_map(student_config, num_teacher)
    elif kind == "explicit":
        if not pairs:
            raise DistillabError(
                "layer_map.pairs: give [[student_layer, teacher_layer], ...] for kind=explicit"
            )
        result = [(int(s), int(t)) for s, t in pairs]
    else:
        raise DistillabError(f"layer_map.kind: unknown {kind!r}; valid: {', '.join(KINDS)}")
    for s, t in result:
        if not (0 <= s < num_student and 0 <= t < num_teacher):
            raise DistillabError(
                f"layer_map: pair ({s}, {t}) out of range for {num_student} student / {num_teacher} teacher layers"
            )
    return result


def layer_map_for(
    kind: str, student, teacher, pairs: Sequence[Sequence[int]] | None = None, k: int | None = None
) -> LayerMap:
    """:func:`build_layer_map` for two loaded models (depths and surgery record read from their configs)."""
    return build_layer_map(
        kind, student.config.num_hidden_layers, teacher.config.num_hidden_layers, student.config, pairs, k
    )
