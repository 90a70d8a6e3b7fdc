"""lm-eval through distillab in bf16 vs float32: wall time and metrics on the same items, one run.

The evaluation is distillab's own (``evaluate_suite``: lm-eval in process, local data, the run's
precision as autocast), so the ratio is what a user gets from ``precision=auto`` on this machine.
Goal on a CPU with native bf16: >= 2.3x faster with every metric inside its stderr.

    python bench/eval_precision.py                                  # teacher, ARC-Easy + PIQA, 300 items each
    python bench/eval_precision.py --tasks arc_easy --limit 100
    python bench/eval_precision.py --force-bf16                     # also on a CPU without native bf16
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from kd_step import SMOLLM2  # noqa: E402
from machine import describe, header  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["arc_easy", "piqa"])
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--force-bf16", action="store_true")
    args = parser.parse_args()

    from distillab.evaluation.suite import evaluate_suite
    from distillab.models.loading import load_model
    from distillab.models.spec import ModelSpec
    from distillab.precision import Precision

    info = describe(args.threads)
    print(header(info))
    if not info["native_bf16"] and not args.force_bf16:
        print("bf16 is not native here: nothing to compare (--force-bf16 runs it emulated, very slowly)")
        return
    model, tokenizer = load_model(ModelSpec(name_or_path=SMOLLM2))
    eval_cfg = {
        "batch_size": args.batch_size,
        "max_length": 2048,
        "tasks": {task: {"limit": args.limit, "num_fewshot": 0} for task in args.tasks},
    }
    results, seconds = {}, {}
    with tempfile.TemporaryDirectory() as work:
        # a few items first: lm-eval's dataset caching and task set-up are not what is compared
        warm_up = {**eval_cfg, "tasks": {t: {"limit": 2, "num_fewshot": 0} for t in args.tasks}}
        evaluate_suite(
            model, tokenizer, warm_up, Path(work), None, Precision("float32", "cpu", "bench", "float32")
        )
        for name in ("float32", "bf16"):
            start = time.perf_counter()
            precision = Precision(name, "cpu", "bench", name)
            results[name] = evaluate_suite(model, tokenizer, eval_cfg, Path(work), None, precision).metrics
            seconds[name] = time.perf_counter() - start
    print(f"SmolLM2-135M-Instruct, {', '.join(args.tasks)}, {args.limit} items each, batch {args.batch_size}")
    print(
        f"  float32 {seconds['float32']:.1f} s, bf16 {seconds['bf16']:.1f} s: bf16 {seconds['float32'] / seconds['bf16']:.2f}x faster (goal >= 2.3)"
    )
    for key, value in sorted(results["float32"].items()):
        if key.endswith("_stderr") or f"{key}_stderr" not in results["float32"]:
            continue
        other, stderr = results["bf16"][key], results["float32"][f"{key}_stderr"]
        verdict = "inside stderr" if abs(other - value) <= stderr else "OUTSIDE stderr"
        print(
            f"  {key:28s} float32 {value:.4f}  bf16 {other:.4f}  diff {other - value:+.4f}  stderr {stderr:.4f}  {verdict}"
        )


if __name__ == "__main__":
    main()
