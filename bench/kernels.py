"""The pieces of a KD step that ``speed.compile`` and fused AdamW change, each eager against its
compiled or fused form, measured in one run (median of ``--repeats`` after one warm-up call):

- the chunked KD kernel (``chunked_kd._forward_kl_value_and_grad``) on one 256 × 49,152 chunk;
- cross-entropy over 1,024 × 49,152 bf16 logits, forward and backward: ``F.cross_entropy`` (eager)
  against ``chunked_ce.chunked_cross_entropy`` with its kernel compiled (``speed.compile=auto``);
- one AdamW update of a 113M-parameter student (SmolLM2-135M's 24-layer cut): foreach vs fused.

    python bench/kernels.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

V = 49_152  # SmolLM2's vocabulary


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed_compile(fn, *args) -> tuple[object, float]:
    compiled = torch.compile(fn)
    start = time.perf_counter()
    compiled(*args)
    return compiled, time.perf_counter() - start


def kd_kernel(repeats: int) -> None:
    from distillab.objectives.chunked_kd import _forward_kl_value_and_grad

    eager = _forward_kl_value_and_grad.__wrapped__  # the undecorated function
    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(256, V, generator=g).bfloat16(), torch.randn(256, V, generator=g).bfloat16()
    compiled, compile_s = timed_compile(eager, t, s, 2.0, True)
    e = median_seconds(lambda: eager(t, s, 2.0, True), repeats)
    c = median_seconds(lambda: compiled(t, s, 2.0, True), repeats)
    print(
        f"KD kernel, 256 x {V}: eager {e * 1e3:.1f} ms, compiled {c * 1e3:.1f} ms, {e / c:.2f}x (compile {compile_s:.1f} s)"
    )


def cross_entropy(repeats: int) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1024, V, generator=g).bfloat16().requires_grad_(True)
    targets = torch.randint(0, V, (1024,), generator=g)

    def eager() -> None:
        logits.grad = None
        F.cross_entropy(logits.float(), targets).backward()

    from distillab.compiling import compiling
    from distillab.objectives.chunked_ce import _cross_entropy_value_and_grad, chunked_cross_entropy

    mask = torch.ones(1, 1024, dtype=torch.bool)
    start = time.perf_counter()
    with compiling("auto"):
        _cross_entropy_value_and_grad(logits.detach()[:256], targets[:256], True)
    compile_s = time.perf_counter() - start

    def chunked() -> None:
        logits.grad = None
        with compiling("auto"):
            chunked_cross_entropy(logits[None], targets[None], mask).backward()

    e, c = median_seconds(eager, repeats), median_seconds(chunked, repeats)
    print(
        f"cross-entropy, 1024 x {V}, forward + backward: F.cross_entropy {e * 1e3:.1f} ms, chunked_ce compiled "
        f"{c * 1e3:.1f} ms, {e / c:.2f}x (compile {compile_s:.1f} s)"
    )


def adamw(repeats: int) -> None:
    # SmolLM2-135M's 24-layer cut: tied embedding 49,152 x 576, 24 layers of attention and MLP
    sizes = [V * 576] + [576 * 1536 * 3 + 576 * 576 * 2 + 576 * 192 * 2] * 24
    params = [torch.nn.Parameter(torch.randn(n)) for n in sizes]
    for p in params:
        p.grad = torch.randn_like(p)
    ms = {}
    for name, kwargs in (("foreach", {"foreach": True}), ("fused", {"fused": True})):
        opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0, **kwargs)
        ms[name] = 1e3 * median_seconds(opt.step, repeats)
    n = sum(p.numel() for p in params) / 1e6
    print(
        f"AdamW update, {n:.1f}M parameters: foreach {ms['foreach']:.1f} ms, fused {ms['fused']:.1f} ms, {ms['foreach'] / ms['fused']:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, os.path.dirname(__file__))
    from machine import describe, header

    print(header(describe(args.threads)))
    kd_kernel(args.repeats)
    cross_entropy(args.repeats)
    adamw(args.repeats)


if __name__ == "__main__":
    main()
