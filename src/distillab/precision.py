"""The numeric precision of a run: ``auto`` is bf16 where the hardware executes it, float32 elsewhere.

One resolved :class:`Precision` per run, entered at the app boundary (``running``; every app's
``run`` is wrapped by ``entry.app_boundary``), decides

- training: Lightning's ``bf16-mixed`` (bf16 autocast; float32 master weights, gradients and
  optimizer state) or ``32-true``, unless ``trainer.precision`` names one explicitly;
- every forward pass of a frozen model (the teacher, lm-eval, perplexity, layer scoring and
  calibration, the teacher cache, generation): under ``torch.autocast(bfloat16)`` or in float32.
  Autocast, not a bf16 copy of the weights, so a student evaluated mid-run keeps its float32
  weights, and teacher and student of one retention figure are scored the same way;
- what is recorded: ``results.json``, the W&B config, the printed table and the key of cached
  teacher evaluations.

Vocabulary-sized math (softmax, log-sum-exp, divergences, cross-entropy) stays in float32 in every
precision: see :func:`float32_math`.

Inside a run, the forward pass of a frozen transformers model (no parameter that trains) that runs
in another precision than the run's raises :class:`PrecisionBypass`: a forward added without
``in_run_precision`` / ``current().autocast`` fails at once instead of silently scoring a model in
float32 next to a teacher scored in bf16. Models that train follow the trainer's precision plugin.

"Native" bf16 means the matrix units execute it: a CUDA GPU that reports bf16 (Ampere and later),
or a CPU with AVX512-BF16 or AMX, asked through torch's own CPU feature checks (not CPU names).
Elsewhere bf16 matmuls are emulated: measured on an AVX2-only 2-core EPYC (torch 2.13), about
1 GFLOP/s in bf16 against 130-140 in float32, so ``auto`` stays in float32 and says why.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import ParamSpec, TypeVar

import torch

from distillab.errors import DistillabError

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

SETTINGS = ("auto", "bf16", "float32")
TRAINER_PRECISION = {"bf16": "bf16-mixed", "float32": "32-true"}


@dataclass(frozen=True)
class Precision:
    """What a run computes in. ``name`` is ``bf16`` or ``float32``; ``reason`` says why."""

    name: str = "float32"
    device_type: str = "cpu"
    reason: str = "default"
    setting: str = "float32"
    train: str | None = None  # the training precision of the run's trainer, when it has one

    def describe(self) -> str:
        """One line for logs and tables: what frozen models and training compute in, and why."""
        training = f"; training {self.train}" if self.train else ""
        return f"{self.name}{training} ({self.reason})"

    @property
    def is_bf16(self) -> bool:
        return self.name == "bf16"

    @property
    def trainer_precision(self) -> str:
        return TRAINER_PRECISION[self.name]

    def on(self, device_type: str) -> Precision:
        """This precision for work on ``device_type``: bf16 only where that device runs it natively
        (a GPU run scores layers and calibrates its cut on the CPU, which may not)."""
        if not self.is_bf16 or device_type == self.device_type:
            return self
        native, evidence = native_bf16(device_type)
        if native:
            return dataclasses.replace(self, device_type=device_type)
        return dataclasses.replace(
            self, name="float32", device_type=device_type, reason=f"on {device_type}: {evidence}"
        )

    def bf16_on(self, device_type: str | None = None) -> bool:
        """Does a frozen model's forward on ``device_type`` (default: the run's device) run in bf16?
        Where that device runs bf16 natively, or wherever bf16 was asked explicitly."""
        used = self.on(device_type) if device_type and self.setting == "auto" else self
        return used.is_bf16

    def autocast(self, device_type: str | None = None) -> contextlib.AbstractContextManager:
        """The context for a frozen model's forward pass on ``device_type`` (default: the run's
        device): bf16 autocast where ``bf16_on``, else nothing."""
        if not self.bf16_on(device_type):
            return contextlib.nullcontext()
        return torch.autocast(device_type=device_type or self.device_type, dtype=torch.bfloat16)

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def native_bf16(device_type: str) -> tuple[bool, str]:
    """Whether ``device_type`` (``cpu`` / ``cuda``) runs bf16 matmuls natively, and the evidence."""
    if device_type == "cuda":
        if not torch.cuda.is_available():
            return False, "no CUDA device is visible"
        name = torch.cuda.get_device_name()
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"{name} supports bf16"
        return False, f"{name} has no native bf16"
    features = {
        "AMX": torch.cpu._is_amx_tile_supported(),
        "AVX512-BF16": torch.cpu._is_avx512_bf16_supported(),
    }
    found = [name for name, present in features.items() if present]
    if found:
        return True, f"this CPU has {' and '.join(found)}"
    return False, (
        f"this CPU has neither AVX512-BF16 nor AMX (torch sees {torch.backends.cpu.get_cpu_capability()}): "
        "bf16 would be emulated, far slower than float32"
    )


def device_type_for(accelerator: str | None) -> str:
    """The torch device type a Lightning ``accelerator`` setting trains on."""
    if accelerator in ("gpu", "cuda"):
        return "cuda"
    if accelerator in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cpu"


def resolve_precision(setting: str | None, device_type: str = "cpu") -> Precision:
    """``auto`` -> bf16 where native, else float32; ``bf16`` / ``float32`` as asked (bf16 on a machine
    without it runs, emulated, with a warning)."""
    setting = "auto" if setting is None else str(setting)
    if setting not in SETTINGS:
        raise DistillabError(f"precision: {setting!r} is not one of {', '.join(SETTINGS)}")
    native, evidence = native_bf16(device_type)
    if setting == "auto":
        name = "bf16" if native else "float32"
        return Precision(name, device_type, f"auto: {evidence}", setting)
    if setting == "bf16" and not native:
        log.warning("precision=bf16 asked, but %s", evidence)
    return Precision(setting, device_type, f"asked; {evidence}", setting)


_RUN: contextvars.ContextVar[Precision | None] = contextvars.ContextVar("distillab_precision", default=None)


class PrecisionBypass(RuntimeError):
    """A frozen model ran in another precision than the run's (a programming error, not a user's)."""


@contextlib.contextmanager
def running(precision: Precision):
    """Inside, ``current()`` is ``precision`` and every frozen transformers model's forward is checked
    against it. Nested runs (a pipeline's stages) enter their own and restore the outer one on exit."""
    token = _RUN.set(precision)
    guard = torch.nn.modules.module.register_module_forward_pre_hook(_check_frozen_forward)
    try:
        yield precision
    finally:
        guard.remove()
        _RUN.reset(token)


@functools.cache
def _pretrained_model_class() -> type:
    from transformers import PreTrainedModel  # imported on first use: this module sits below models/

    return PreTrainedModel


def current() -> Precision:
    """The run's precision; float32 outside a run (tests, library use)."""
    return _RUN.get() or Precision()


def _check_frozen_forward(module: torch.nn.Module, args) -> None:
    """Called before every module's forward inside a run (a global hook): cheap for all but the
    transformers models themselves. Inside a compiled forward (speed.compile=true) it is skipped:
    the model's own call was checked eagerly, before its compiled forward began."""
    if torch.compiler.is_compiling():
        return
    run = _RUN.get()
    if run is None or not isinstance(module, _pretrained_model_class()):
        return
    if any(p.requires_grad for p in module.parameters()):  # it trains: Lightning's precision plugin decides
        return
    device = module_device_type(module) or "cpu"
    want = run.bf16_on(device)
    have = torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16
    if want != have:
        raise PrecisionBypass(
            f"{type(module).__name__} ran {'in bf16' if have else 'in float32'} on {device}, but the run's "
            f"precision there is {'bf16' if want else 'float32'}: run frozen forwards under "
            "precision.in_run_precision or precision.current().autocast(device)"
        )


def module_device_type(model) -> str | None:
    """The device type a model's parameters live on (``None`` for anything that is not a module)."""
    if not isinstance(model, torch.nn.Module):
        return None
    parameter = next(model.parameters(), None)
    return parameter.device.type if parameter is not None else None


def cache_tag(model) -> str:
    """What a cache key of ``model``'s outputs appends for the run's precision on ``model``'s device:
    ``-bf16`` in bf16, nothing in float32 (so float32 keys written before precision existed hold)."""
    return "-bf16" if current().on(module_device_type(model) or "cpu").is_bf16 else ""


def float32_math(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast off on ``tensor``'s device: vocabulary-sized math (matrix products of probabilities
    with logits, log-sum-exp) stays float32 even inside a bf16-mixed training step."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)


@contextlib.contextmanager
def linear_weights_cast_once(model: torch.nn.Module):
    """Inside, under autocast, each ``nn.Linear`` of ``model`` computes with a copy of its weight cast
    once on entry, instead of autocast casting it again on every call (autocast caches only weights
    that require grad, and only within one forward). The values are the same: autocast rounds those
    weights to the same dtype. For loops of frozen forwards (evaluation): the weights must not change
    inside. Outside autocast, nothing changes."""
    device = module_device_type(model)
    if device is None or not torch.is_autocast_enabled(device):
        yield
        return
    dtype = torch.get_autocast_dtype(device)
    patched, last = [], _LastCast()
    for module in model.modules():
        # plain weights only: a quantized tensor subclass (torchao) keeps its own kernels
        if (
            type(module) is torch.nn.Linear
            and type(module.weight.data) is torch.Tensor
            and module.weight.is_floating_point()
        ):
            bias = None if module.bias is None else module.bias.detach().to(dtype)
            module.forward = functools.partial(cast_linear, module.weight.detach().to(dtype), bias, last=last)
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward  # the class's forward again


class _LastCast:
    """The last input cast by :func:`cast_linear`: q, k and v projections (gate and up) read the
    same activations, which autocast casts again for each."""

    def __init__(self) -> None:
        self.source: torch.Tensor | None = None
        self.version, self.cast = -1, None

    def of(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if x.dtype == dtype:
            return x
        if x is not self.source or x._version != self.version or self.cast.dtype != dtype:
            self.source, self.version, self.cast = x, x._version, x.to(dtype)
        return self.cast


def cast_linear(
    weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor, last: _LastCast | None = None
) -> torch.Tensor:
    """A Linear's forward with weights already cast (to ``weight``'s dtype): what autocast computes.
    With ``last``, an input cast for the previous call is reused."""
    cast = x.to(weight.dtype) if last is None else last.of(x, weight.dtype)
    return torch.nn.functional.linear(cast, weight, bias)


def in_run_precision(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator for a frozen model's forward work (scoring, calibration, the teacher cache,
    generation): runs ``fn`` under the run's precision."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with current().autocast(module_device_type(args[0]) if args else None):
            return fn(*args, **kwargs)

    return wrapper
