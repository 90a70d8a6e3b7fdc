"""What every bench prints next to its ratios: the machine, its bf16 capability, measured matmul peaks.

A ratio measured on one CPU says little about another (bf16 is ~4x float32 on a CPU with
AVX512-BF16 and ~100x slower than float32 on one without), so each bench measures the peak it
compares against in the same run, on the same threads.
"""

from __future__ import annotations

import platform
import time


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def matmul_gflops(dtype_name: str, threads: int, size: int = 2048, repeats: int = 3) -> float:
    """Measured GFLOP/s of a ``size``² matmul in ``dtype_name`` (best of ``repeats`` after a warm-up)."""
    import torch

    torch.set_num_threads(threads)
    dtype = {"float32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def describe(threads: int) -> dict:
    """CPU, torch, bf16 capability (distillab's own detection) and the measured matmul peaks."""
    import torch

    from distillab.precision import native_bf16

    native, evidence = native_bf16("cpu")
    peaks = {"float32": matmul_gflops("float32", threads)}
    # Without native bf16 a 2048² bf16 matmul takes about a minute: measure a smaller one to show it.
    peaks["bf16"] = matmul_gflops(
        "bf16", threads, size=2048 if native else 256, repeats=1 if not native else 3
    )
    return {
        "cpu": cpu_name(),
        "threads": threads,
        "torch": torch.__version__,
        "native_bf16": native,
        "bf16_evidence": evidence,
        "peak_gflops": peaks,
    }


def header(info: dict) -> str:
    peaks = info["peak_gflops"]
    return (
        f"machine: {info['cpu']}, {info['threads']} threads, torch {info['torch']}\n"
        f"bf16: {'native' if info['native_bf16'] else 'NOT native'} ({info['bf16_evidence']})\n"
        f"measured matmul peak: float32 {peaks['float32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s"
        f"{'' if info['native_bf16'] else ' (256² emulated)'}"
    )


if __name__ == "__main__":  # python bench/machine.py [threads] [--bf16-size N]
    import argparse
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    parser = argparse.ArgumentParser(description="the machine line every bench prints")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--bf16-size", type=int, help="also time a bf16 matmul of this size (slow where emulated)"
    )
    args = parser.parse_args()
    print(header(describe(args.threads)))
    if args.bf16_size:
        print(
            f"bf16 {args.bf16_size}² matmul: {matmul_gflops('bf16', args.threads, args.bf16_size, 1):.2f} GFLOP/s"
        )


def step_bench_arguments(
    parser,
    batch: int = 4,
    seq: int = 256,
    steps: int = 4,
    warmup: int = 2,
    repeats: int = 2,
    threads: int = 2,
) -> None:
    """The arguments every training-step bench takes: the model (``--tiny``), the batch, how many
    steps are timed after how many warm-up ones, how many runs per variant, the thread count."""
    parser.add_argument("--tiny", action="store_true", help="tiny random Llama: seconds, for a smoke test")
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--seq", type=int, default=seq)
    parser.add_argument("--steps", type=int, default=steps, help="timed steps")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=repeats, help="runs per variant, alternating")
    parser.add_argument("--threads", type=int, default=threads)


def alternating_medians(script: str, child_args: list[str], variants: list[str], repeats: int) -> dict:
    """Run ``script --child <variant>`` (one process per run, so peak RSS is the variant's own) for
    every variant, ``repeats`` rounds alternating so drift on the machine hits all alike; each child
    prints one JSON object of numbers last. Returns the per-variant medians of those numbers."""
    import json
    import statistics
    import subprocess
    import sys

    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for _ in range(repeats):
        for variant in variants:
            out = subprocess.run(
                [sys.executable, script, *child_args, "--child", variant], capture_output=True, text=True
            )
            if out.returncode != 0:
                raise SystemExit(f"{script} --child {variant} failed:\n{out.stderr[-3000:]}")
            runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {v: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for v, rs in runs.items()}


def parent_or_child(parser, child) -> tuple[object, dict, list[str]] | None:
    """The part every process-per-variant bench shares: adds ``--precision`` (default: bf16 where
    native) and the hidden ``--child``; in a child runs ``child(args)`` and returns None; in the
    parent prints the machine and returns ``(args, machine info, the children's arguments)``."""
    import argparse
    import sys

    parser.add_argument("--precision", choices=["float32", "bf16"], help="default: bf16 where native")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return None
    info = describe(args.threads)
    print(header(info))  # the machine next to every ratio printed after it
    args.precision = args.precision or ("bf16" if info["native_bf16"] else "float32")
    passed = [a for a in sys.argv[1:] if a not in ("--precision", "float32", "bf16")]
    return args, info, [*passed, "--precision", args.precision]
