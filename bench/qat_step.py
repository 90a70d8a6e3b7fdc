"""Quantization-aware healing's cost: the KD step of ``bench/kd_step.py`` (SmolLM2-135M 30 -> 24
layers, batch 4 x 256, 0.5·T²·KL + 0.5·CE, the config's fused AdamW, ``speed.compile=auto``) plain and
with ``quantize_aware`` in each GGUF format, every variant in its own process, alternating; medians
compared. Goal: a quantization-aware step <= 1.3x the plain one. Q4_K_M (llama.cpp's types and
quantizer through ctypes, quantization/k_quants.py) is among the defaults when llama.cpp is installed,
searching its scales every step and (``q4_k_m@4``: ``quantize_aware.refresh_every=4``) every 4th step.
Step times are the mean over the timed steps (a variant searching every N-th step costs that on
average; the timed steps must be a multiple of N).

    python bench/qat_step.py                        # bf16 where native, else float32
    python bench/qat_step.py --formats q4_1 q4_k_m q4_k_m@4 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from kd_step import step_figures  # noqa: E402
from machine import alternating_medians, parent_or_child, step_bench_arguments  # noqa: E402


def child(args) -> None:
    from distillab.quantization.fake_quant import QuantizeAware

    fmt, _, every = args.child.partition("@")
    applied = QuantizeAware(fmt, refresh_every=int(every or 1)).applied if fmt != "plain" else None
    print(json.dumps(step_figures(args, applied)))


def default_formats() -> list[str]:
    from distillab.quantization import llama_cpp

    return ["q8_0", "q4_0", "q4_1", *(["q4_k_m", "q4_k_m@4"] if llama_cpp.is_available() else [])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    step_bench_arguments(parser)
    parser.add_argument("--formats", nargs="+", default=default_formats())
    started = parent_or_child(parser, child)
    if started is None:
        return
    args, _, child_args = started
    for variant in args.formats:
        every = int(variant.partition("@")[2] or 1)
        if args.steps % every:
            parser.error(f"--formats {variant}: --steps {args.steps} is not a multiple of {every}")
    passed = [a for a in child_args if a not in ("--formats", *args.formats)]  # each child: one variant
    med = alternating_medians(__file__, passed, ["plain", *args.formats], args.repeats)
    model = "tiny:llama" if args.tiny else "SmolLM2-135M (30 -> 24 layers)"
    print(
        f"KD step, {model}, batch {args.batch} x seq {args.seq}, {args.precision}, speed.compile=auto, "
        f"mean of {args.steps} timed steps after {args.warmup} warm-up, median of {args.repeats} runs each"
    )
    plain = med["plain"]
    for v, m in med.items():
        ratio = plain["tokens_per_s_mean"] / m["tokens_per_s_mean"]
        print(
            f"  {v:9s} {m['tokens_per_s_mean']:8.1f} tokens/s   peak RSS {m['peak_rss_mb']:8.1f} MB   "
            f"step time x plain {ratio:.3f}{' (goal <= 1.3)' if v != 'plain' else ''}   "
            f"memory x plain {m['peak_rss_mb'] / plain['peak_rss_mb']:.3f}"
        )


if __name__ == "__main__":
    main()
