"""Where does bf16 training lose accuracy? One KD step's loss and gradient, bf16 against float32.

On a CPU with native bf16 the step runs under real ``torch.autocast(bfloat16)``. On one without it
(bf16 matmuls are ~100x slower there) every matrix product is *emulated* at float32 speed: inputs
and output rounded to bf16, accumulation in float32 — what oneDNN and cuBLAS do in bf16. Element-wise
ops stay float32 in the emulation, so it isolates the matrix products.

Variants, each against the float32 step on the same batch:
  matmuls            every model matmul in bf16, the loss's vocabulary math in float32 (distillab now)
  matmuls+loss       also the fused forward-KL's two products (Σp·log p, Σp·s) in bf16 (distillab before)
  forward only       model matmuls in bf16 in the forward pass only (backward in float32)
  backward only      model matmuls in bf16 in the backward pass only (emulation only)
  teacher forward    only the teacher's forward in bf16 (emulation only)
  student forward    only the student's forward in bf16 (emulation only)
  logits             only the logits rounded to bf16 (student and teacher), everything else float32

Printed: relative error of the loss, cosine similarity and relative norm error of the full
gradient, and of the LM-head/embedding gradient alone.

    python bench/bf16_numerics.py              # SmolLM2-135M (make models), 30 -> 24 layers, batch 4 x 256
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(__file__))
from kd_step import ALPHA, SMOLLM2, TEMPERATURE  # noqa: E402

aten = torch.ops.aten
MATMULS = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}
ATTENTION = {aten._scaled_dot_product_flash_attention_for_cpu.default}


def _round(x):
    return x.to(torch.bfloat16).to(x.dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x


def _is_loss_product(func, args) -> bool:
    """The fused forward KL's per-token dot products (and their backward): a bmm with a size-1 dim."""
    return func is aten.bmm.default and any(1 in a.shape[1:] for a in args if isinstance(a, torch.Tensor))


class EmulatedBf16Matmuls(TorchDispatchMode):
    """Every matmul (and fused attention) sees bf16-rounded inputs and returns a bf16-rounded output;
    the loss's own products only when ``round_loss`` (forward and backward alike)."""

    def __init__(self, round_loss: bool):
        super().__init__()
        self.round_loss = round_loss

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func in MATMULS or func in ATTENTION) and (self.round_loss or not _is_loss_product(func, args)):
            args = tuple(_round(a) for a in args)
            out = func(*args, **kwargs)
            return tuple(_round(o) for o in out) if isinstance(out, tuple) else _round(out)
        return func(*args, **kwargs)


def step_gradient(teacher, student, ids, variant: str, native: bool):
    """Loss and flattened gradient of 0.5·T²·KL + 0.5·CE for one batch under ``variant``: each of the
    teacher forward, student forward, loss and backward runs in bf16 (autocast where native, the
    emulation elsewhere) or in float32."""
    from distillab.objectives import divergences
    from distillab.objectives.terms import hard_label_ce

    student.zero_grad(set_to_none=True)
    targets = torch.cat([ids[:, 1:], ids.new_full((ids.shape[0], 1), -100)], dim=1)
    mask = targets != -100
    loss_in_bf16 = variant == "matmuls+loss"

    def bf16():
        if native:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return EmulatedBf16Matmuls(round_loss=loss_in_bf16)

    def in_bf16(*parts: str):
        return bf16() if variant in parts else contextlib.nullcontext()

    everywhere = ("matmuls", "matmuls+loss")
    with torch.no_grad(), in_bf16(*everywhere, "forward only", "teacher forward"):
        t_logits = teacher(input_ids=ids).logits
    with in_bf16(*everywhere, "forward only", "student forward"):
        s_logits = student(input_ids=ids).logits
    if variant == "logits":
        t_logits, s_logits = _round(t_logits), s_logits + (_round(s_logits) - s_logits).detach()
    with in_bf16("matmuls+loss"):
        # natively, autocast would leave the guarded function in float32: call the unguarded one
        kl_fn = (
            divergences._forward_kl_from_logits
            if loss_in_bf16 and native
            else divergences.forward_kl_from_logits
        )
        kl = kl_fn(t_logits, s_logits, TEMPERATURE)
        ce = hard_label_ce(s_logits, targets, mask)
        loss = ALPHA * TEMPERATURE**2 * divergences.masked_mean(kl, mask) + (1 - ALPHA) * ce
    # autocast does not reach backward (it runs in the forward's dtypes); the emulation must be asked
    with in_bf16(*(() if native else everywhere), "backward only"):
        loss.backward()
    return _result(loss, student)


def _result(loss, student):
    head = student.get_output_embeddings().weight.grad.detach().flatten().double()
    flat = torch.cat([p.grad.detach().flatten().double() for p in student.parameters() if p.grad is not None])
    return float(loss), flat, head


def compare(reference, other) -> str:
    (ref_loss, ref_grad, ref_head), (loss, grad, head) = reference, other
    cos = torch.nn.functional.cosine_similarity(ref_grad, grad, dim=0)
    head_cos = torch.nn.functional.cosine_similarity(ref_head, head, dim=0)
    norm = ((grad - ref_grad).norm() / ref_grad.norm()).item()
    return (
        f"loss {loss:.5f} (rel. err {abs(loss - ref_loss) / ref_loss:.1e})  grad cosine {cos:.6f}  "
        f"grad rel. err {norm:.3e}  LM-head grad cosine {head_cos:.6f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument(
        "--remove",
        type=int,
        nargs="+",
        help="teacher layers to cut (default: 6 evenly spaced, the old demo's)",
    )
    args = parser.parse_args()
    from machine import cpu_name

    from distillab.models.loading import load_model
    from distillab.models.spec import ModelSpec
    from distillab.models.student import drop_layers_student
    from distillab.precision import native_bf16

    torch.set_num_threads(args.threads)
    native, evidence = native_bf16("cpu")
    print(
        f"machine: {cpu_name()}, {args.threads} threads; bf16 {'native' if native else 'EMULATED'} ({evidence})"
    )
    teacher, tokenizer = load_model(ModelSpec(name_or_path="tiny:llama" if args.tiny else SMOLLM2))
    teacher.requires_grad_(False)
    student = drop_layers_student(teacher, remove=args.remove, num_remove=2 if args.tiny else 6)
    print(f"student: teacher layers {args.remove or 'evenly spaced'} removed")
    # real text, not random ids: a trained model's logits on text are peaked, which is what matters
    from distillab.data.corpus import read_documents
    from distillab.data.packing import bos_token_id, pack, tokenize_documents
    from distillab.data.paths import resolve_data_dir

    source = {"format": "jsonl", "files": "corpus/redpajama_sample/*.jsonl", "text_field": "text"}
    docs = read_documents(source, resolve_data_dir(None))[:200]  # the demo's training corpus
    blocks = pack(
        tokenize_documents(tokenizer, docs), tokenizer.eos_token_id, args.seq, bos_token_id(tokenizer)
    )
    ids = blocks[: args.batch]
    reference = step_gradient(teacher, student, ids, "float32", native)
    print(f"float32        loss {reference[0]:.5f}")
    variants = ("matmuls", "matmuls+loss", "forward only", "logits")
    if os.environ.get("BF16_NUMERICS_ONLY"):
        variants = tuple(os.environ["BF16_NUMERICS_ONLY"].split(","))
    emulation_only = ("backward only", "teacher forward", "student forward")
    for variant in (*variants, *emulation_only) if not native else variants:
        print(f"{variant:14s} {compare(reference, step_gradient(teacher, student, ids, variant, native))}")


if __name__ == "__main__":
    main()
