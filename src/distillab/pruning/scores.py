"""Every importance score, in one table, each saying what it scores and where it may be named.

- **Layer scores** (``pruning/layer_scores.py``): one importance per decoder layer; the lowest go.
- **Weight scores** (``pruning/weight_scores.py``): one importance per weight of the decoder's linear
  layers, for width (heads, neurons) and unstructured cuts.

Where a score is valid (``PLACES``): ``student`` is ``student.score``, the layers a student is cut by
before distillation, from one calibration pass of the teacher, so only the activation scores;
``layers``, ``width`` and ``unstructured`` are ``prune.score`` under that ``prune`` method. Every
check of a score name reads this table, so an error lists exactly the names valid for its key.
A new score is its function and one line in ``SCORES``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from distillab.errors import DistillabError
from distillab.pruning import layer_scores as ls
from distillab.pruning import weight_scores as ws

PLACES = {  # place: (its key, what it is)
    "student": ("student.score", "a student cut before distillation"),
    "layers": ("prune.score", "prune=layers"),
    "width": ("prune.score", "prune=width"),
    "unstructured": ("prune.score", "prune=unstructured"),
}
LAYER_CUTS = frozenset({"student", "layers"})  # activation scores: one calibration pass
WEIGHT_CUTS = frozenset({"width", "unstructured"})


@dataclass(frozen=True)
class Score:
    compute: Callable  # layer: (model, ScoreInputs) -> [importance]; weight: (model, linears, batches) -> {name: tensor}
    kind: str  # "layer" | "weight"
    valid_in: frozenset[str]  # keys of PLACES
    needs_calibration: bool = True


SCORES: dict[str, Score] = {
    **{name: Score(ls.activation_score(name), "layer", LAYER_CUTS) for name in ls.ACTIVATION_SCORES},
    "ppl_drop": Score(ls.ppl_drop, "layer", frozenset({"layers"})),  # one layer out at a time: prune only
    "benchmark_drop": Score(ls.benchmark_drop, "layer", frozenset({"layers"})),
    "random": Score(ls.random_order, "layer", frozenset({"layers"}), needs_calibration=False),
    "last": Score(ls.depth_order, "layer", LAYER_CUTS, needs_calibration=False),  # cut the last N layers
    "magnitude": Score(ws.magnitude, "weight", WEIGHT_CUTS, needs_calibration=False),
    "gradient": Score(ws.gradient, "weight", WEIGHT_CUTS),
    "taylor": Score(ws.taylor, "weight", WEIGHT_CUTS),
    "wanda": Score(ws.wanda, "weight", WEIGHT_CUTS),
}


def valid_scores(place: str) -> list[str]:
    return [name for name, score in SCORES.items() if place in score.valid_in]


def check_score(name: str, place: str, key: str | None = None) -> Score:
    """The score ``name`` if it is valid at ``place`` (a key of ``PLACES``), else one error line."""
    if name in SCORES and place in SCORES[name].valid_in:
        return SCORES[name]
    elsewhere = ""
    if name in SCORES:
        places = ", ".join(PLACES[p][1] for p in sorted(SCORES[name].valid_in))
        elsewhere = f" (a {SCORES[name].kind} score, for {places})"
    raise DistillabError(
        f"{key or PLACES[place][0]}: {name!r} is not a score for {PLACES[place][1]}{elsewhere}; "
        f"valid: {', '.join(valid_scores(place))}"
    )


def score_layers(name: str, model: nn.Module, inputs: ls.ScoreInputs, place: str = "layers") -> list[float]:
    """Per-layer importance of ``model`` by layer score ``name`` (higher = keep)."""
    return check_score(name, place).compute(model, inputs)


def weight_scores(
    model: nn.Module, name: str, batches: Sequence[torch.Tensor] = (), place: str = "width"
) -> dict[str, torch.Tensor]:
    """``name``'s score of every prunable weight, ``{parameter name: tensor shaped like the weight}``."""
    score = check_score(name, place)
    if score.needs_calibration and not batches:
        raise DistillabError(
            f"prune.score: {name!r} needs calibration data (prune.calibration.num_blocks >= 1)"
        )
    return score.compute(model, ws.prunable_linears(model), batches)
