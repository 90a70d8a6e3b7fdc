"""Where a KD train step's time goes: distillab's step (kd + ce, SmolLM2 30 -> 24 layers, batch 4 x 256)
under torch.profiler, every operator's own time sorted into what it is for.

`make bench` says how far the step is from the matmul peak; this says why. Categories:

- matrix products: mm / addmm / attention kernels (the model FLOPs, the only work the peak measures)
- vocabulary-sized: every other operator on a tensor with a vocabulary-wide dimension (softmax,
  log-sum-exp, divergences, cross-entropy, their gradients, logit dtype casts), kept in float32 on
  purpose (README, "Precision")
- weight casts: autocast's copies of float32 weights to bf16 (each forward, both models)
- the rest: norms, activations, rotary embeddings, residual adds, AdamW's element-wise updates

    python bench/kd_profile.py                       # bf16 where native, else float32
    python bench/kd_profile.py --precision float32
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from kd_step import LR, kd_ce_module  # noqa: E402
from machine import describe, header  # noqa: E402

MATRIX_OPS = ("aten::mm", "aten::addmm", "aten::_scaled_dot_product_flash_attention_for_cpu")


def category(name: str, shapes: list, vocab: int, weight_shapes: set) -> str:
    dims = [d for shape in shapes if isinstance(shape, list) for d in shape if isinstance(d, int)]
    if name.startswith(MATRIX_OPS):
        return "matrix products"
    if vocab in dims:
        return "vocabulary-sized (float32)"
    if name in ("aten::copy_", "aten::_to_copy") and shapes and tuple(shapes[0]) in weight_shapes:
        return "weight casts (autocast)"
    return "the rest (norms, activations, rotary, AdamW, ...)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=["float32", "bf16"])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    info = describe(args.threads)
    print(header(info))
    args.precision = args.precision or ("bf16" if info["native_bf16"] else "float32")
    args.batch, args.seq, args.warmup = 4, 256, 1

    import torch
    from torch.profiler import ProfilerActivity, profile

    from distillab import precision as P

    module, batches = kd_ce_module(argparse.Namespace(**{**vars(args), "steps": args.steps}))
    teacher, student = module.teacher, module.student
    module.log = lambda *a, **k: None  # no Trainer here: the step itself, as Lightning's bf16-mixed runs it
    optimizer = torch.optim.AdamW(student.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.0)
    P.use(P.Precision(args.precision, "cpu", "bench", args.precision))
    bf16 = args.precision == "bf16"

    def step(ids):
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = module._step(batch, "train")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()

    step(batches[0])  # warm-up
    vocab = teacher.config.vocab_size
    weights = {tuple(p.shape) for m in (teacher, student) for p in m.parameters() if p.dim() == 2}
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for ids in batches[1 : 1 + args.steps]:
            step(ids)
    wall = (time.perf_counter() - start) / args.steps
    seconds = collections.Counter()
    for event in prof.key_averages(group_by_input_shape=True):
        seconds[category(event.key, event.input_shapes, vocab, weights)] += event.self_cpu_time_total / 1e6
    total = sum(seconds.values())
    tokens = args.batch * args.seq
    flops = (2 * teacher.num_parameters() + 6 * student.num_parameters()) * tokens
    peak = info["peak_gflops"][args.precision] * 1e9
    print(
        f"KD step (kd + ce), {args.precision}, batch {args.batch} x {args.seq}, {args.steps} profiled steps: "
        f"{wall:.2f} s/step under the profiler, {tokens / wall:.0f} tokens/s"
    )
    print(f"  model FLOPs at the measured {args.precision} peak would take {flops / peak:.2f} s/step")
    for name, value in seconds.most_common():
        print(f"  {name:52s} {value / args.steps:6.2f} s/step  {100 * value / total:5.1f}%")


if __name__ == "__main__":
    main()
