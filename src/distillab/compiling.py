"""``speed.compile``: torch.compile (inductor, CPU and CUDA) where it wins, eager where it cannot.

- ``auto`` (default): the vocabulary-sized kernels compile — the soft-label KD divergence and its
  gradient over each chunk of positions (``objectives/chunked_kd.py``) and cross-entropy
  (``objectives/chunked_ce.py``), each fused into a few passes over the chunk. The models stay
  eager: on a bf16-native 2-core Xeon, compiling the models' forward and backward too gained 3–8%
  per step for 20–92 s of compilation (bench/kd_step.py, docs/performance.md), which a short run
  does not earn back.
- ``true``: the kernels, and the student's and teacher's forward (and backward) while training.
- ``false``: everything eager.

A kernel or model that inductor cannot compile (no C++ compiler, an operation it does not lower)
logs one line and runs eager from then on. Compiled and eager give the same numbers within the
tests' tolerances (tests/test_compiling.py); the first step of a run pays the compilation.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

import torch

from distillab.errors import DistillabError

log = logging.getLogger(__name__)

MODES = ("auto", "true", "false")
_mode: ContextVar[str] = ContextVar("distillab_compile", default="false")  # outside a run: eager

F = TypeVar("F", bound=Callable[..., Any])


def check_mode(value: Any) -> str:
    """``speed.compile`` as one of :data:`MODES` (YAML reads true/false as booleans)."""
    mode = str(value).lower() if isinstance(value, bool) else str(value)
    if mode not in MODES:
        raise DistillabError(f"speed.compile: {value!r} is not valid; valid: {' | '.join(MODES)}")
    return mode


@contextlib.contextmanager
def compiling(value: Any) -> Iterator[str]:
    """Kernels called inside compile per ``value`` (``auto``/``true``: yes); restores the outer mode."""
    token = _mode.set(check_mode(value))
    try:
        yield _mode.get()
    finally:
        _mode.reset(token)


def current() -> str:
    return _mode.get()


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def kernel(fn: F | None = None, *, options: dict[str, Any] | None = None) -> F:
    """``fn`` compiled inside ``compiling("auto" | "true")``, eager otherwise. ``fn`` must not need
    autograd through it (the chunked losses compute their gradients themselves), so a failed
    compilation can simply run ``fn`` again, eagerly. The compiled function is made on first use
    and kept (``wrapper.compiled``); ``wrapper.failed`` is set once it could not compile.
    ``options``: inductor's, e.g. ``{"emulate_precision_casts": True}`` where a kernel's rounding
    through a narrower dtype is part of its result."""
    if fn is None:
        return functools.partial(kernel, options=options)  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _mode.get() == "false" or wrapper.failed:
            return fn(*args, **kwargs)
        if wrapper.compiled is None:
            wrapper.compiled = torch.compile(fn, options=options) if options else torch.compile(fn)
        try:
            return wrapper.compiled(*args, **kwargs)
        except Exception as err:  # inductor raises many types (compiler missing, lowering errors)
            wrapper.failed = True
            log.warning(
                "speed.compile: %s runs eager; it could not be compiled (%s)", fn.__name__, _first_line(err)
            )
            return fn(*args, **kwargs)

    wrapper.compiled, wrapper.failed = None, False  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def compiled_models(models: dict[str, torch.nn.Module | None], value: Any) -> Iterator[None]:
    """Under ``true``, each model's ``forward`` compiled for the block (an instance attribute: the
    weights, their names in checkpoints and the exported folder are untouched), and its own again
    afterwards, so evaluation and export run eager. A model whose compiled forward fails logs one
    line and goes on eager."""
    mode = check_mode(value)
    patched = [(name, m) for name, m in models.items() if m is not None] if mode == "true" else []
    for name, model in patched:
        model.forward = _forward_or_eager(model, name)
    try:
        yield
    finally:
        for _, model in patched:
            model.__dict__.pop("forward", None)


def _forward_or_eager(model: torch.nn.Module, name: str) -> Callable[..., Any]:
    eager = model.forward
    compiled = torch.compile(eager)

    def forward(*args: Any, **kwargs: Any) -> Any:
        try:
            return compiled(*args, **kwargs)
        except Exception as err:
            log.warning(
                "speed.compile: the %s's forward runs eager; it could not be compiled (%s)",
                name,
                _first_line(err),
            )
            model.forward = eager
            return eager(*args, **kwargs)

    return forward
