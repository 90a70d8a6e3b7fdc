"""experiments/004 on one GPU: push the healing-budget curve past what 2 CPU cores reach.

The same cut (the 6 layers Block Influence removed on the CPU curve, pinned here so a bf16 score
cannot pick others), objective (ild), optimizer, constant learning rate, data and eval suite
(decision_cpu: the same items) as ``make exp-004``; what differs is said in every run's config:
bf16-mixed training and bf16 evaluation (``precision=auto`` on a bf16 GPU) and, for the long arm, a
batch of 64 x 256 tokens instead of 4 x 256 (a GPU at batch 4 is bound by kernel launches).

Arms, in this order, inside one wall-clock budget (``--budget-s``):

1. ``b64/steps_100``   batch 64, 100 steps (1.64M tokens; the teacher's bf16 evaluation too)
2. ``b64/steps_N``     resumed from 1, N as far as the budget allows (<= ``--max-steps``), measured
                       from arm 1's step time
3. ``b4/steps_96``     batch 4 (the CPU recipe), 96 steps: bf16 vs the CPU's float32 ``steps_96``

Each arm is one ``distillab-distill`` run (the checkpoint/resume path of ``make exp-004``); its
results, per-item files, logs and metrics.csv are packed into ``<out>/<arm>.tar.gz`` as soon as it
ends (``--pack`` copies them elsewhere too), so a budget that runs out keeps every finished arm.
A rerun with the same ``--out`` skips finished arms and continues arm 2 from the longest batch-64
run that left a checkpoint.

    python experiments/004-healing-budget/gpu_points.py --out outputs/distill/budget_curve_gpu
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

# The layers the CPU curve removed (Block Influence on 16 float32 calibration blocks; distill.log of
# outputs/distill/budget_curve/steps_24: kept [0..12, 16, 18..24, 27..29]).
REMOVED = "[13,14,15,17,25,26]"
COMMON = [
    "scheduler=constant",
    "eval.batch_size=32",
    "logger=csv",
    "trainer.limit_val_batches=4",
    "trainer.log_every_n_steps=10",
    "export=false",
    "experiment_name=budget_curve_gpu",
    f"student.remove={REMOVED}",
    "student.num_remove=null",
    "student.score=null",
]
KEEP = ("results.json", "retention.md", "items", "csv", "entry.log", "stdout.log", ".hydra")


def run_arm(out: Path, arm: str, steps: int, batch: int, resume: Path | None, opts) -> tuple[dict, float]:
    run_dir = out / arm
    if (run_dir / "results.json").is_file():  # finished earlier: kept, never overwritten
        results = json.loads((run_dir / "results.json").read_text())
        print(f"{arm}: finished earlier ({run_dir / 'results.json'}), skipped", flush=True)
        return results, float(results.get("wall_seconds") or 0.0)
    args = [
        *COMMON,
        f"trainer={opts.trainer}",
        f"eval={opts.eval}",
        f"threads={opts.threads}",
        f"data.batch_size={batch}",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={min(steps, opts.first_steps)}",
        f"callbacks.checkpoint.every_n_train_steps={steps}",
        f"hydra.run.dir={run_dir}",
        *opts.extra,
    ]
    if resume is not None:
        args.append(f"ckpt_path={resume.resolve()}")
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    print(f"[{time.strftime('%H:%M:%S')}] {arm}: {' '.join(args)}", flush=True)
    with open(run_dir / "stdout.log", "w") as log:
        code = subprocess.call([sys.executable, "-m", "distillab.distill", *args], stdout=log, stderr=log)
    wall = time.time() - start
    pack(run_dir, out / f"{arm.replace('/', '_')}.tar.gz", opts.pack)
    if code != 0:
        tail = (run_dir / "stdout.log").read_text().splitlines()[-25:]
        print("\n".join(tail), flush=True)
        raise SystemExit(f"{arm}: exit {code} after {wall:.0f} s")
    results = json.loads((run_dir / "results.json").read_text())
    print(
        f"[{time.strftime('%H:%M:%S')}] {arm}: {wall:.0f} s wall, train {results['train_seconds']:.1f} s, "
        f"{results['train_tokens']} tokens, eval {results.get('eval_seconds')}, "
        f"retention/mean {results.get('retention_mean')}",
        flush=True,
    )
    return results, wall


def pack(run_dir: Path, tarball: Path, copies: list[Path]) -> None:
    with tarfile.open(tarball, "w:gz") as tar:
        for name in KEEP:
            if (run_dir / name).exists():
                tar.add(run_dir / name, arcname=f"{run_dir.name}/{name}")
    for folder in copies:
        shutil.copy2(tarball, folder / tarball.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/distill/budget_curve_gpu"))
    parser.add_argument("--budget-s", type=float, default=3600.0, help="wall-clock budget for all arms")
    parser.add_argument("--batch", type=int, default=64, help="blocks of 256 tokens per step, long arm")
    parser.add_argument("--first-steps", type=int, default=100, help="arm 1's steps; arm 2 is a multiple")
    parser.add_argument(
        "--max-steps", type=int, default=6400, help="the long arm's ceiling (6,400 x 16,384 = 105M tokens)"
    )
    parser.add_argument("--small-steps", type=int, default=96, help="arm 3: steps at batch 4 (0: skip)")
    parser.add_argument("--trainer", default="gpu", help="trainer config (cpu: a rehearsal of this script)")
    parser.add_argument(
        "--eval", default="decision_cpu", help="eval suite (decision_cpu: the CPU curve's items)"
    )
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument(
        "--pack", type=Path, action="append", default=[], help="also copy each arm's tarball here"
    )
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every arm")
    opts = parser.parse_args()
    start, first_steps = time.time(), opts.first_steps
    if opts.batch == 4 and opts.small_steps == first_steps:
        parser.error("--batch 4 with --small-steps equal to --first-steps: arms 1 and 3 would be one run")
    opts.out.mkdir(parents=True, exist_ok=True)

    first_arm = f"b{opts.batch}/steps_{first_steps}"
    first, first_wall = run_arm(opts.out, first_arm, first_steps, opts.batch, None, opts)
    step_s = first["train_seconds"] / first_steps  # includes fit's start and one validation: errs long
    teacher_eval = (first.get("eval_seconds") or {}).get("teacher", 0.0)
    per_run = first_wall - first["train_seconds"] - teacher_eval  # start, load, cut, student eval
    reserve = per_run + 30 if opts.small_steps else 0  # arm 3 (a few small steps) after arm 2
    left = opts.budget_s - (time.time() - start) - reserve - per_run
    # continue the longest batch arm that left a checkpoint (a rerun goes on where the last stopped)
    runs = opts.out / f"b{opts.batch}"
    saved = [
        int(d.name.split("_")[1]) for d in runs.glob("steps_*") if (d / "checkpoints" / "last.ckpt").is_file()
    ]
    since = max(saved, default=first_steps)
    steps = max(since, min(opts.max_steps, since + int(left / step_s) // first_steps * first_steps))
    print(
        f"step {step_s:.3f} s, per-run overhead {per_run:.0f} s, {left:.0f} s left -> {steps} steps",
        flush=True,
    )
    if steps >= since + first_steps:
        resume = runs / f"steps_{since}" / "checkpoints" / "last.ckpt"
        run_arm(opts.out, f"b{opts.batch}/steps_{steps}", steps, opts.batch, resume, opts)
    if opts.small_steps and opts.budget_s - (time.time() - start) > per_run + 20:
        run_arm(opts.out, f"b4/steps_{opts.small_steps}", opts.small_steps, 4, None, opts)
    print(f"done in {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
