"""Quantization-aware healing: the student trains on its weights as a GGUF file will hold them.

Each 2-D weight the GGUF export quantizes (every ``nn.Linear`` and the embedding, which a tied model
also uses as its head) is replaced in the forward pass by ``dequantize(quantize(W))`` in the chosen
llama.cpp block format, and the gradient passes straight through to the float weights (the
straight-through estimator). The formats are computed exactly as the ``gguf`` package (llama.cpp's
Python writer, which the export uses) computes them, so the float weights the run ends with quantize
to exactly the values the student was trained on (``tests/test_fake_quant.py`` checks bit for bit;
a K-quant mix with ``refresh_every`` > 1, below, trains on a grid up to N − 1 steps older):

- ``q8_0``: blocks of 32, ``d = max|x| / 127``, ``q = round(x / d)`` (half away from zero), ``d`` as fp16;
- ``q4_0``: blocks of 32, ``d = x_max / −8`` (the signed value of largest magnitude),
  ``q = min(15, trunc(x / d + 8.5))``, value ``(q − 8) · d``;
- ``q4_1``: blocks of 32, ``d = (max − min) / 15``, ``q = min(15, trunc((x − min) / d + 0.5))``,
  value ``q · d + min`` with ``d`` and ``min`` stored as fp16;
- ``q5_0``, ``q5_1``: ``q4_0`` and ``q4_1`` with 32 levels (``x_max / −16``, ``+ 16.5``; ``/ 31``).

A weight whose rows do not fill whole blocks is stored as f16 by the export, and is rounded to fp16
here; vectors (norms, biases) stay float, as in the file. The parametrizations are removed when
training ends, leaving the float weights, which ``distillab-quantize`` then writes in the format.
Those float weights are only the optimizer's latent copy: a quantization-aware run scores its student
on the grid (``as_stored``), the values its file will hold.

llama.cpp's mixes (``q4_k_m`` and the other ``quantize.gguf_type`` values llama.cpp writes) choose a
type per tensor; each weight gets the type llama.cpp gives it and llama.cpp's own quantizer
(``k_quants.py``, needs the ``gguf-runtime`` extra), on the weight rounded to fp16 as the f16 export
that llama.cpp re-quantizes holds it. Types with a kernel here (q8_0 …) use the kernel. That search
costs about 0.9 s of a 3.1 s step on 2 CPU cores (docs/performance.md#qat_step), so ``refresh_every``
N > 1 runs it every N-th optimizer step only; in between, each K-quant weight is re-rounded onto the
scales (and mins) of its last search, as llama.cpp's quantizer rounds once its scales are chosen
(``k_quants.Grid``): the grid the student trains on is up to N − 1 steps old, the values still on it.
Scoring (``as_stored``) and the file always run a fresh search. The steps are the optimizer's own
count (restored with it): a run resumed at step k searches at its first step, then on steps that are
multiples of N, as the uninterrupted run did.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.optim.optimizer import register_optimizer_step_post_hook

from distillab import compiling
from distillab.compiling import kernel
from distillab.errors import DistillabError
from distillab.quantization import k_quants, llama_cpp

log = logging.getLogger(__name__)

BLOCK = 32  # values per block in q8_0, q4_0 and q4_1


def _fp16(x: torch.Tensor) -> torch.Tensor:
    return x.half().float()


def _inverse(d: torch.Tensor) -> torch.Tensor:
    return torch.where(d == 0, torch.zeros_like(d), 1 / d)


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    """ggml's ``roundf``, as gguf's ``np_roundf`` computes it."""
    a = x.abs()
    floored = a.floor()
    return x.sign() * (floored + (2 * (a - floored)).floor())


# Compiled under speed.compile=auto|true (3-10x on a Xeon), with inductor made to round through fp16
# where the code does (by default it skips such round trips); checked against eager on first use.
_exact = kernel(options={"emulate_precision_casts": True})


@_exact
def q8_0(blocks: torch.Tensor) -> torch.Tensor:
    d = blocks.abs().amax(-1, keepdim=True) / 127
    q = _round_half_away(blocks * _inverse(d)) + 0.0  # + 0: the file's int8 has no −0
    return q * _fp16(d)


def _signed_largest_scale(blocks: torch.Tensor, half: int) -> torch.Tensor:
    """q4_0 (half 8) and q5_0 (half 16): ``d = x_max / −half``, ``q = trunc(x / d + half + 0.5)``."""
    largest = blocks.gather(-1, blocks.abs().argmax(-1, keepdim=True))  # signed, first of ties
    d = largest / -half
    q = torch.trunc(blocks * _inverse(d) + (half + 0.5)).clamp(0, 2 * half - 1)
    return _fp16(d) * (q - half)


def _min_max_scale(blocks: torch.Tensor, top: int) -> torch.Tensor:
    """q4_1 (top 15) and q5_1 (top 31): ``d = (max − min) / top``, value ``q · d + min``."""
    low, high = blocks.amin(-1, keepdim=True), blocks.amax(-1, keepdim=True)
    d = (high - low) / top
    q = torch.trunc((blocks - low) * _inverse(d) + 0.5).clamp(0, top)
    return _fp16(d) * q + _fp16(low)


@_exact
def q4_0(blocks: torch.Tensor) -> torch.Tensor:
    return _signed_largest_scale(blocks, 8)


@_exact
def q4_1(blocks: torch.Tensor) -> torch.Tensor:
    return _min_max_scale(blocks, 15)


@_exact
def q5_0(blocks: torch.Tensor) -> torch.Tensor:
    return _signed_largest_scale(blocks, 16)


@_exact
def q5_1(blocks: torch.Tensor) -> torch.Tensor:
    return _min_max_scale(blocks, 31)


FORMATS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "q8_0": q8_0, "q4_0": q4_0, "q4_1": q4_1, "q5_0": q5_0, "q5_1": q5_1,
}  # fmt: skip


def check_format(name: str, key: str = "quantize_aware") -> str:
    """``name`` if it is a format (a llama.cpp mix also needs the runtime); else one line naming the key."""
    if name in llama_cpp.LLAMA_CPP_TYPES:
        llama_cpp.require_llama_cpp(f"{key}.format={name}")
    elif name not in FORMATS:
        valid = " | ".join([*FORMATS, *llama_cpp.LLAMA_CPP_TYPES])
        raise DistillabError(f"{key}.format: {name!r} is not valid; valid: {valid}")
    return name


@torch.no_grad()
def fake_quantize(weight: torch.Tensor, fmt: str) -> torch.Tensor:
    """``weight`` as the GGUF export stores it in ``fmt`` and a loader reads it back (float32 math)."""
    w = weight.detach().float()
    if w.dim() < 2:
        return w
    if w.shape[-1] % BLOCK:
        return _fp16(w)  # the export stores such a tensor as f16
    return _quantized_blocks(w.reshape(-1, BLOCK), check_format(fmt)).reshape(w.shape)


_checked: dict[str, bool] = {}  # format -> its compiled kernel gave eager's values on first use


def _quantized_blocks(blocks: torch.Tensor, fmt: str) -> torch.Tensor:
    """The format's kernel; where it runs compiled, its first result is compared with eager's and a
    difference (another compiler, another CPU) sends the format back to eager for good, in one line."""
    kernel_fn = FORMATS[fmt]
    if compiling.current() == "false" or _checked.get(fmt) is False:
        return kernel_fn.__wrapped__(blocks)
    out = kernel_fn(blocks)
    if fmt not in _checked:
        _checked[fmt] = torch.equal(out, kernel_fn.__wrapped__(blocks))
        if not _checked[fmt]:
            log.warning(
                "quantize_aware: the compiled %s kernel differs from the gguf formula; it runs eager", fmt
            )
            return kernel_fn.__wrapped__(blocks)
    return out


class _PassGradient(torch.autograd.Function):
    """Forward: the quantized weight; backward: the gradient goes to the float weight unchanged."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
        return quantized

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class StraightThrough(nn.Module):
    """A parametrization: the forward sees the weight fake-quantized, the gradient reaches it as is.

    The quantized copy is kept until the weight changes: an optimizer step (a hook clears the copy:
    torch's fused AdamW updates weights without moving their version counter) or any other in-place
    update (the version counter moves). So the forwards between two optimizer steps, and a tied
    embedding and head, quantize it once."""

    def __init__(self, quantize: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.quantize = quantize
        self._key: tuple[int, int, int] | None = None
        self._quantized: torch.Tensor | None = None

    def forget(self, *args: Any) -> None:
        self._key = self._quantized = None

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        key = (id(weight), weight.data_ptr(), weight._version)
        if key != self._key:
            self._quantized, self._key = self.quantize(weight).to(weight.dtype), key
        return _PassGradient.apply(weight, self._quantized)


def quantized_weights(model: nn.Module) -> list[nn.Module]:
    """The modules whose ``weight`` the GGUF export quantizes: 2-D weights of Linear and Embedding
    layers (a tied head appears twice, as the embedding's module and the head's)."""
    return [
        module
        for module in model.modules()
        if isinstance(module, (nn.Linear, nn.Embedding))
        and isinstance(getattr(module, "weight", None), torch.Tensor)
        and module.weight.dim() == 2
    ]


@dataclass(frozen=True)
class QuantizeAware:
    """``quantize_aware`` in a config: train on the weights as ``format`` will store them."""

    format: str
    refresh_every: int = 1  # optimizer steps between llama.cpp's scale searches (a K-quant mix)

    def __post_init__(self) -> None:
        check_format(self.format)
        if not isinstance(self.refresh_every, int) or self.refresh_every < 1:
            raise DistillabError(
                f"quantize_aware.refresh_every: {self.refresh_every!r} is not valid; valid: an integer >= 1"
            )
        if self.refresh_every > 1 and self.format in FORMATS:  # would silently change nothing
            raise DistillabError(
                f"quantize_aware.refresh_every: {self.refresh_every} applies to llama.cpp's K-quant mixes "
                f"(q4_k_m …); {self.format} is quantized exactly every step: set 1 or a mix as format"
            )

    def describe(self) -> str:
        refresh = f", scales searched every {self.refresh_every} steps" if self.refresh_every > 1 else ""
        return f"quantization-aware ({self.format}, straight-through{refresh})"

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Inside, ``model``'s quantized weights are fake-quantized in every forward; afterwards the
        parametrizations are gone and the float (latent) weights stay, under their own names."""
        modules = quantized_weights(model)
        steps = OptimizerSteps()
        quantizers = self._quantizers(model, steps)
        shared: dict[int, StraightThrough] = {}  # one per weight: a tied embedding and head share it
        for module in modules:
            fake = shared.setdefault(id(module.weight), StraightThrough(quantizers[id(module.weight)]))
            parametrize.register_parametrization(module, "weight", fake)

        def after_step(optimizer: torch.optim.Optimizer, *args: Any) -> None:
            steps.update(optimizer)
            for fake in shared.values():
                fake.forget()

        stepped = register_optimizer_step_post_hook(after_step)
        try:
            yield model
        finally:
            stepped.remove()
            for module in modules:
                if parametrize.is_parametrized(module, "weight"):
                    parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)

    def _quantizers(
        self, model: nn.Module, steps: OptimizerSteps | None = None
    ) -> dict[int, Callable[[torch.Tensor], torch.Tensor]]:
        """The quantizer of each exported weight (by ``id``): the format's, or in a llama.cpp mix the
        type llama.cpp gives that tensor (``steps``: when ``refresh_every`` searches; none: always)."""
        weights = [id(m.weight) for m in quantized_weights(model)]
        if self.format in FORMATS:
            return dict.fromkeys(weights, functools.partial(fake_quantize, fmt=self.format))
        types = k_quants.tensor_types(model, self.format, torch.get_num_threads())
        named = {id(p): name for name, p in model.named_parameters()}  # a tied weight: its first name
        missing = [named.get(key, "?") for key in weights if named.get(key) not in types]
        if missing:
            raise DistillabError(
                f"quantize_aware.format={self.format}: llama.cpp wrote no tensor for {missing[:3]}"
            )
        chosen = {key: types[named[key]] for key in weights}
        counts = collections.Counter(t.name for t in chosen.values())
        log.info("quantize_aware: %s as llama.cpp assigns it: %s", self.format, ", ".join(f"{n} {t}" for t, n in counts.most_common()))  # fmt: skip
        if self.refresh_every > 1:
            stale = sorted({t.name for t in chosen.values() if t in k_quants.GRID_TYPES})
            log.info(
                "quantize_aware: llama.cpp's scale search every %d optimizer steps for %s; other types every step",
                self.refresh_every, ", ".join(stale) or "no tensor",
            )  # fmt: skip
        steps = steps or OptimizerSteps()
        return {key: _mix_quantizer(qtype, self.refresh_every, steps) for key, qtype in chosen.items()}


class OptimizerSteps:
    """Optimizer steps taken: the optimizer's own count where it keeps one (Adam's ``step``, restored
    with its state when a run resumes, so a resumed run keeps the schedule), else counted here."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, optimizer: torch.optim.Optimizer) -> None:
        for group in optimizer.param_groups:
            for param in group["params"]:
                step = optimizer.state.get(param, {}).get("step")
                if step is not None:
                    self.value = int(step)
                    return
        self.value += 1


@contextlib.contextmanager
def as_stored(model: nn.Module, quantize_aware: QuantizeAware | None) -> Iterator[nn.Module]:
    """Inside, ``model`` holds its weights as ``quantize_aware``'s format stores them: where a
    quantization-aware run scores its student. Its latent float weights are no model anyone runs
    (on SmolLM2's pipeline cut healed on the q4_1 grid they keep 45.8% of the teacher, the grid 70.0%).
    A plain run (``quantize_aware`` None): the model as it is.

    The values are written into the weights themselves (and put back on exit), not parametrized as in
    training: an evaluator sees a plain model, so a tied embedding and head are still one parameter
    (lm-eval re-ties them by name, which a parametrized weight would break)."""
    if not quantize_aware:
        yield model
        return
    quantizers = quantize_aware._quantizers(model)
    saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # a tied weight once
    try:
        with torch.no_grad():  # inside the try: a quantizer failing half-way still restores
            for module in quantized_weights(model):
                weight = module.weight
                if id(weight) not in saved:
                    saved[id(weight)] = (weight, weight.detach().clone())
                    weight.copy_(quantizers[id(weight)](weight).to(weight.dtype))
        yield model
    finally:
        with torch.no_grad():
            for weight, original in saved.values():
                weight.copy_(original)


def _mix_quantizer(
    qtype: k_quants.QType, refresh_every: int, steps: OptimizerSteps
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A tensor of a llama.cpp mix: the f16 export's values, then its type (this module's kernel
    where there is one: the same values as llama.cpp's, tested against its file)."""
    name = qtype.name.lower()
    if name in FORMATS:
        return lambda weight: fake_quantize(weight.detach().float().half().float(), name)
    if refresh_every > 1 and qtype in k_quants.GRID_TYPES:
        return _RefreshedGrid(qtype, refresh_every, steps)
    return functools.partial(k_quants.fake_quantize, qtype=qtype, threads=torch.get_num_threads())


class _RefreshedGrid:
    """One weight's K-quant values: llama.cpp's search on the first call and whenever the optimizer
    step is a multiple of ``every`` (``StraightThrough`` calls once per new version of the weight:
    once per optimizer step), and in between the weight re-rounded onto the scales that search chose.
    Resumed at step k, the run searches at its first step (it has no grid yet), then on the schedule."""

    def __init__(self, qtype: k_quants.QType, every: int, steps: OptimizerSteps):
        self.qtype, self.every, self.steps = qtype, every, steps
        self.grid = None

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        w = weight.detach().float().half().float()  # the f16 export's values
        if self.grid is None or self.steps.value % self.every == 0:
            values, self.grid = k_quants.quantize_with_grid(
                w.cpu().numpy(), self.qtype, torch.get_num_threads()
            )
            out = torch.from_numpy(values)
        else:
            out = self.grid.round(w.cpu())
        return out.to(weight.device)


def from_config(node: Any, key: str = "quantize_aware") -> QuantizeAware | None:
    """``quantize_aware`` of a distill config (``heal.quantize_aware`` in prune), built and checked;
    None when not selected."""
    if not node:
        return None
    from distillab.config import build_target

    check_format(node.get("format"), key)
    return build_target(node, key, "a quantization-aware recipe", "applied")
