"""Peak memory and step time of each objective preset vs the CE-only baseline, same batch.

Each preset runs in its own fresh process: SmolLM2-135M teacher (resident in every variant, so
the comparison isolates what the objective adds), 24-layer student, one batch of 2 x 512 tokens,
vocabulary 49,152, a few DistillModule training steps (forward, loss, backward, AdamW) under a
Lightning Trainer. Peak RSS of that process and the median step time are compared with CE-only.
Each step runs as ``distillab-distill`` would: the composed config's optimizer (fused AdamW) and
``speed.compile`` (``auto``: the chunked KD and CE kernels compiled; add ``,speed.compile=false`` to a
preset for eager), in bf16 where the CPU has it natively (``precision=auto``), else float32.
Goals: every preset <= 1.25x CE-only memory; distill_lens and multi_signal <= 2.0x CE-only time.

    python bench/objectives_memory.py            # real model (make models)
    python bench/objectives_memory.py --tiny     # tiny random Llama, seconds
    python bench/objectives_memory.py --presets ce multi_signal,objective.terms.contrastive.weight=0
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kd_step import _setup, timed_fit  # noqa: E402  (same teacher/student/batch construction as the KD bench)
from machine import parent_or_child  # noqa: E402

PRESETS = ["ce", "kd", "ild", "distill_lens", "multi_signal"]


def child(args) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from distillab.compiling import compiled_models, compiling
    from distillab.config import CONFIG_DIR
    from distillab.objectives.objective import build_objective
    from distillab.training.distill_module import DistillModule
    from distillab.training.fit import attach_documents

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        preset, *overrides = args.child.split(",")  # "preset,key=value,..." for ablations
        cfg = compose("distill", overrides=[f"objective={preset}", *overrides])
    terms = OmegaConf.to_container(cfg.objective.terms, resolve=True)
    teacher, student, batches, tokenizer = _setup(args)
    objective = build_objective(terms)
    attach_documents(objective, tokenizer, None)  # contrastive prompts from the data directory
    module = DistillModule(student, objective, teacher, optimizer=instantiate(cfg.optimizer, lr=1e-4))
    mode = cfg.speed.compile
    with compiling(mode), compiled_models({"student": student, "teacher": teacher}, mode):
        times = timed_fit(module, batches, precision="bf16-mixed" if args.precision == "bf16" else "32-true")
    print(
        json.dumps(
            {
                "step_s": statistics.median(times[args.warmup :]),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--presets", nargs="+", default=PRESETS)
    parser.add_argument(
        "--allocator", default="reuse", help="process.ALLOCATORS (bench/allocator.py compares them)"
    )
    started = parent_or_child(parser, child)  # the children get the precision explicitly
    if started is None:
        return
    args, _, child_args = started
    results = {}
    for preset in args.presets:
        out = subprocess.run(
            [sys.executable, __file__, *child_args, "--child", preset], capture_output=True, text=True
        )
        if out.returncode != 0:
            print(f"{preset}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        results[preset] = json.loads(out.stdout.strip().splitlines()[-1])
    base = results.get("ce")
    model = "tiny:llama" if args.tiny else "SmolLM2-135M (30 -> 24 layers)"
    print(
        f"objective presets, {model}, batch {args.batch} x seq {args.seq}, {args.threads} threads, "
        f"median of {args.steps} steps after {args.warmup} warm-up, {args.precision}; teacher resident in every variant"
    )
    print(f"  {'preset':14s} {'step s':>8s} {'peak RSS MB':>12s} {'x CE memory':>12s} {'x CE time':>10s}")
    for preset, r in results.items():
        mem = r["peak_rss_mb"] / base["peak_rss_mb"] if base else float("nan")
        t = r["step_s"] / base["step_s"] if base else float("nan")
        print(f"  {preset:14s} {r['step_s']:8.2f} {r['peak_rss_mb']:12.1f} {mem:12.3f} {t:10.3f}")
    print(
        "  goals: every preset <= 1.25 x CE-only peak memory; distill_lens, multi_signal <= 2.0 x CE-only time"
    )


if __name__ == "__main__":
    main()
