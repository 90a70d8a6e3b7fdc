"""Peak memory and step time of KD variants, each in a fresh process, against a baseline of the same run.

Groups (``--groups``):

- ``vocab262k``: Gemma-3-270m teacher (resident in every variant) and its 12-layer cut as the
  student, vocabulary 262,144: CE-only vs KD with the teacher's logits a chunk at a time (distillab
  now) vs KD on full logits (before: ``kd_full``). Goal: chunked KD peak ≤ 1.25× CE-only.
- ``vocab49k``: the same at SmolLM2-135M (30 -> 24 layers, vocabulary 49,152): chunked KD must be no
  slower than full-logit KD.
- ``cross``: SmolLM2 30 -> 24 with ``kd`` vs ``cross_kd`` (hybrid, uld) against the same teacher, so the
  difference is alignment + the cross-vocabulary loss; then Gemma-3-270m -> SmolLM2-135M ``cross_kd``.
- ``on_policy``: SmolLM2 30 -> 24, kd at fraction 0 vs 1 (every step samples ``--new-tokens``).

    python bench/teacher_kinds.py --groups vocab49k cross on_policy      # needs make models
    python bench/teacher_kinds.py --groups vocab262k                      # also make models-gemma
    python bench/teacher_kinds.py --groups cross --repeats 3              # round-robin: time ratios with their spread
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kd_step import timed_fit  # noqa: E402

CACHE = Path(os.environ.get("DISTILLAB_CACHE_DIR", Path.home() / ".cache" / "distillab")) / "models"
SMOLLM2, GEMMA = CACHE / "SmolLM2-135M-Instruct", CACHE / "gemma-3-270m"
# SmolLM2 30 -> 24: the demo's Block Influence cut; Gemma 18 -> 12: six interior layers, evenly spaced
SMOLLM2_CUT, GEMMA_CUT = [13, 14, 15, 17, 25, 26], [3, 5, 8, 10, 13, 15]

# variant -> (teacher, student source, student layers removed, objective terms, on-policy fraction)
KD = {
    "kd": {"_target_": "distillab.objectives.terms.SoftLabelKD", "weight": 0.5, "temperature": 2.0},
    "ce": {"_target_": "distillab.objectives.terms.HardLabelCE", "weight": 0.5},
}
VARIANTS = {
    "vocab262k": {
        "ce": (
            "gemma",
            "gemma",
            "cut",
            {"ce": {"_target_": "distillab.objectives.terms.HardLabelCE", "weight": 1.0}},
            0.0,
        ),
        "kd_chunked": ("gemma", "gemma", "cut", KD, 0.0),
        "kd_full": ("gemma", "gemma", "cut", KD, 0.0),
    },
    "vocab49k": {
        "ce": (
            "smollm2",
            "smollm2",
            "cut",
            {"ce": {"_target_": "distillab.objectives.terms.HardLabelCE", "weight": 1.0}},
            0.0,
        ),
        "kd_chunked": ("smollm2", "smollm2", "cut", KD, 0.0),
        "kd_full": ("smollm2", "smollm2", "cut", KD, 0.0),
    },
    "cross": {
        "kd": ("smollm2", "smollm2", "cut", KD, 0.0),
        "cross_kd_hybrid": (
            "smollm2",
            "smollm2",
            "cut",
            {
                "cross_kd": {
                    "_target_": "distillab.objectives.cross_tokenizer.CrossTokenizerKD",
                    "weight": 0.5,
                },
                "ce": {"_target_": "distillab.objectives.terms.HardLabelCE", "weight": 0.5},
            },
            0.0,
        ),
        "cross_kd_uld": (
            "smollm2",
            "smollm2",
            "cut",
            {
                "cross_kd": {
                    "_target_": "distillab.objectives.cross_tokenizer.CrossTokenizerKD",
                    "weight": 0.5,
                    "loss": "uld",
                },
                "ce": {"_target_": "distillab.objectives.terms.HardLabelCE", "weight": 0.5},
            },
            0.0,
        ),
        "gemma_cross_kd_hybrid": (
            "gemma",
            "smollm2",
            "whole",
            {
                "cross_kd": {
                    "_target_": "distillab.objectives.cross_tokenizer.CrossTokenizerKD",
                    "weight": 0.5,
                },
                "ce": {"_target_": "distillab.objectives.terms.HardLabelCE", "weight": 0.5},
            },
            0.0,
        ),
    },
    "on_policy": {
        "kd_off_policy": ("smollm2", "smollm2", "cut", KD, 0.0),
        "kd_on_policy": ("smollm2", "smollm2", "cut", KD, 1.0),
    },
}


def child(args) -> None:
    import functools

    import torch

    from distillab.data.token_alignment import TokenAligner
    from distillab.models.loading import load_model
    from distillab.models.spec import ModelSpec
    from distillab.models.surgery import remove_layers
    from distillab.objectives.objective import build_objective
    from distillab.objectives.terms import SoftLabelKD
    from distillab.process import set_allocator
    from distillab.training.distill_module import DistillModule
    from distillab.training.on_policy import OnPolicy

    group, name = args.child.split(":")
    teacher_name, student_name, student_cut, terms, fraction = VARIANTS[group][name]
    torch.set_num_threads(args.threads)
    set_allocator("reuse")  # as the entry points do (conf: allocator)
    torch.manual_seed(0)
    paths = {"smollm2": SMOLLM2, "gemma": GEMMA}
    teacher, teacher_tok = load_model(ModelSpec(name_or_path=str(paths[teacher_name])))
    teacher.requires_grad_(False)
    if student_name == teacher_name:
        student, student_tok = teacher, teacher_tok
    else:
        student, student_tok = load_model(ModelSpec(name_or_path=str(paths[student_name])))
    if student_cut == "cut":
        cut = SMOLLM2_CUT if student_name == "smollm2" else GEMMA_CUT
        student = remove_layers(student, cut)
    student.requires_grad_(True).train()
    if name == "kd_full":  # before this change: the teacher's whole (B, T, V) logits every step
        SoftLabelKD.needs_teacher_logits = True
    objective = build_objective(terms)
    aligner = None
    if objective.cross_tokenizer:
        objective.attach_tokenizers(student_tok, teacher_tok)
        aligner = TokenAligner(student_tok, teacher_tok)
    on_policy = OnPolicy(
        fraction=fraction, prompt_tokens=args.seq - args.new_tokens, new_tokens=args.new_tokens
    )
    module = DistillModule(
        student,
        objective,
        teacher,
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-4),
        aligner=aligner,
        on_policy=on_policy,
        student_tokenizer=student_tok,
    )
    vocab = student.config.vocab_size
    g = torch.Generator().manual_seed(0)
    # Random tokens are fine when both models read the same ids; a cross_kd variant needs real text
    # (words for the teacher's tokenizer to align with), so its whole group reads that text: the
    # same-tokenizer kd baseline of ``cross`` then differs from cross_kd only by the cross-vocab work.
    if aligner is None and group != "cross":
        batches = [
            torch.randint(0, vocab, (args.batch, args.seq), generator=g)
            for _ in range(args.warmup + args.steps)
        ]
    else:
        batches = _text_batches(student_tok, args)
    reset_peak_rss()  # from here on the peak is training's alone (loading and cutting models peak higher)
    times = timed_fit(module, batches)
    print(
        json.dumps(
            {
                "step_s": statistics.median(times[args.warmup :]),
                "peak_rss_mb": peak_rss_mb(),
                "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def reset_peak_rss() -> None:
    """Linux: writing 5 to /proc/self/clear_refs resets the process's peak RSS (VmHWM)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _text_batches(tokenizer, args):
    import glob

    import torch

    data = Path(
        os.environ.get("DISTILLAB_DATA_DIR", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    )
    ids: list[int] = []
    for path in sorted(glob.glob(str(data / "corpus" / "redpajama_sample" / "*.jsonl"))):
        for line in open(path).readlines()[:20]:
            ids += tokenizer(json.loads(line)["text"])["input_ids"] + [tokenizer.eos_token_id]
    need = (args.warmup + args.steps) * args.batch * args.seq
    rows = torch.tensor(ids[:need]).view(-1, args.batch, args.seq)
    return list(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--groups", nargs="+", default=["vocab49k", "cross", "on_policy"], choices=list(VARIANTS)
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--repeats", type=int, default=1, help="rounds of every variant, each in a fresh process"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    from machine import describe, header

    print(header(describe(args.threads)))
    print(
        f"batch {args.batch} x seq {args.seq}, {args.threads} threads, median of {args.steps} steps after "
        f"{args.warmup} warm-up, medians over {args.repeats} round(s) of fresh processes, float32; "
        "teacher resident in every variant; peak RSS from the first step on (VmHWM reset after "
        "loading); ratios against each group's first row"
    )
    for group in args.groups:
        # --repeats: the variants run round-robin, each round in fresh processes, so a slow spell of
        # the machine hits every variant alike; per-round time ratios show the process-to-process spread
        runs = {name: [] for name in VARIANTS[group]}
        for _ in range(args.repeats):
            for name in VARIANTS[group]:
                out = subprocess.run(
                    [sys.executable, __file__, *sys.argv[1:], "--child", f"{group}:{name}"],
                    capture_output=True,
                    text=True,
                )
                if out.returncode != 0:
                    print(f"{group}:{name}: failed\n{out.stderr[-1500:]}", file=sys.stderr)
                    runs[name].append(None)  # keeps the rounds aligned for the per-round ratios
                    continue
                runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
        runs = {name: r for name, r in runs.items() if any(r)}
        base = next(iter(runs.values()), None)
        print(
            f"\n{group}\n  {'variant':24s} {'step s':>8s} {'peak RSS MB':>12s} {'x memory':>9s} {'x time':>8s}"
            + ("  per-round x time" if args.repeats > 1 else "")
        )
        if base is None:
            continue
        base_step = statistics.median(x["step_s"] for x in base if x)
        base_rss = statistics.median(x["peak_rss_mb"] for x in base if x)
        for name, r in runs.items():
            step = statistics.median(x["step_s"] for x in r if x)
            rss = statistics.median(x["peak_rss_mb"] for x in r if x)
            line = f"  {name:24s} {step:8.2f} {rss:12.1f} {rss / base_rss:9.3f} {step / base_step:8.3f}"
            ratios = [x["step_s"] / b["step_s"] for x, b in zip(r, base, strict=True) if x and b]
            if args.repeats > 1 and ratios:
                line += f"  {min(ratios):.3f} .. {max(ratios):.3f}"
            print(line)


if __name__ == "__main__":
    main()
