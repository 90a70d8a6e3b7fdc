"""Parameter-efficient healing's cost: the KD step of ``bench/kd_step.py`` (SmolLM2-135M 30 -> 24
layers, batch 4 x 256, 0.5·T²·KL + 0.5·CE, the config's fused AdamW, ``speed.compile=auto``) with
every parameter training (``full``), through LoRA adapters (``lora``: conf/tuning/lora.yaml, rank 16
on every linear layer) and with only the last 3 layers, the norm and the head (``last_layers``). Each
variant in its own process, alternating; medians compared, with the trainable parameter counts.

    python bench/tuning_step.py                     # bf16 where native, else float32
    python bench/tuning_step.py --repeats 3 --rank 64
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from kd_step import step_figures  # noqa: E402
from machine import alternating_medians, parent_or_child, step_bench_arguments  # noqa: E402

VARIANTS = ("full", "lora", "last_layers")


def tuning_kind(variant: str, rank: int, tiny: bool):
    from distillab.training.tuning import LastLayers, LoRA

    last = LastLayers(1 if tiny else 3)  # the tiny student has 2 layers
    return {"full": None, "lora": LoRA(rank=rank, alpha=2.0 * rank), "last_layers": last}[variant]


def child(args) -> None:
    from distillab.training.tuning import trainable_parameters

    kind = tuning_kind(args.child, args.rank, args.tiny)
    count = lambda student: {"trainable_m": trainable_parameters(student)[0] / 1e6}  # noqa: E731
    print(json.dumps(step_figures(args, kind.applied if kind else None, count)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    step_bench_arguments(parser)
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank (alpha = 2 x rank)")
    started = parent_or_child(parser, child)
    if started is None:
        return
    args, _, child_args = started
    med = alternating_medians(__file__, child_args, list(VARIANTS), args.repeats)
    model = "tiny:llama" if args.tiny else "SmolLM2-135M (30 -> 24 layers)"
    print(
        f"KD step, {model}, batch {args.batch} x seq {args.seq}, {args.precision}, speed.compile=auto, "
        f"{args.steps} timed steps after {args.warmup} warm-up, median of {args.repeats} runs each; "
        f"LoRA rank {args.rank}"
    )
    full = med["full"]
    for v, m in med.items():
        print(
            f"  {v:11s} {m['trainable_m']:7.2f}M trainable   {m['tokens_per_s']:8.1f} tokens/s   "
            f"step time x full {full['tokens_per_s'] / m['tokens_per_s']:.3f}   "
            f"peak RSS {m['peak_rss_mb']:8.1f} MB   memory x full {m['peak_rss_mb'] / full['peak_rss_mb']:.3f}"
        )


if __name__ == "__main__":
    main()
