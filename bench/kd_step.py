"""KD train-step throughput and peak memory: distillab's DistillModule under a Lightning Trainer vs
a bare PyTorch loop doing the same math on the same model and batch, measured in one run.

Each variant runs in its own fresh subprocess (so peak RSS is its own), the two alternating
``--repeats`` times; the medians are compared. Each precision (float32, and bf16 where the CPU runs
it natively; ``--precision bf16`` forces it) is measured in the same run, with the machine, its bf16
capability and the measured matmul peaks printed first; model FLOPs per token (teacher forward
2·N_t + student forward and backward 6·N_s) times tokens/s is reported as a share of that peak.

    python bench/kd_step.py                 # real SmolLM2-135M (make models), 30 -> 24 layers
    python bench/kd_step.py --tiny          # tiny random Llama: seconds, for a smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from machine import step_bench_arguments  # noqa: E402  (bench/ is on sys.path: scripts run from it)

SMOLLM2 = os.path.join(
    os.environ.get("DISTILLAB_CACHE_DIR", os.path.expanduser("~/.cache/distillab")),
    "models",
    "SmolLM2-135M-Instruct",
)
ALPHA, TEMPERATURE, LR, CLIP = 0.5, 2.0, 1e-4, 1.0


def _setup(args):
    import torch

    from distillab.models.loading import load_model
    from distillab.models.spec import ModelSpec
    from distillab.models.student import drop_layers_student
    from distillab.process import set_allocator

    torch.set_num_threads(args.threads)
    set_allocator(getattr(args, "allocator", "reuse"))  # as the entry points do (conf: allocator)
    torch.manual_seed(0)
    spec = ModelSpec(name_or_path="tiny:llama" if args.tiny else SMOLLM2)
    teacher, tokenizer = load_model(spec)
    teacher.requires_grad_(False)
    student = drop_layers_student(teacher, num_remove=2 if args.tiny else 6)
    vocab = teacher.config.vocab_size
    g = torch.Generator().manual_seed(0)
    batches = [
        torch.randint(0, vocab, (args.batch, args.seq), generator=g) for _ in range(args.warmup + args.steps)
    ]
    return teacher, student, batches, tokenizer


def _autocast(args):
    import contextlib

    import torch

    if args.precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def bare(args) -> list[float]:
    """The same step written directly: teacher no-grad forward, student forward, loss, backward, clip, step."""
    import torch
    import torch.nn.functional as F

    teacher, student, batches, _ = _setup(args)
    opt = torch.optim.AdamW(student.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.0)
    times = []
    for ids in batches:
        start = time.perf_counter()
        with _autocast(args):
            with torch.no_grad():
                t_logits = teacher(input_ids=ids).logits[:, :-1]
            s_logits = student(input_ids=ids).logits[:, :-1]
        t_logits, s_logits = t_logits.float(), s_logits.float()
        t_logp = F.log_softmax(t_logits / TEMPERATURE, -1)
        s_logp = F.log_softmax(s_logits / TEMPERATURE, -1)
        kd = (t_logp.exp() * (t_logp - s_logp)).sum(-1).mean() * TEMPERATURE**2
        ce = F.cross_entropy(s_logits.flatten(0, 1), ids[:, 1:].flatten())
        loss = ALPHA * kd + (1 - ALPHA) * ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), CLIP)
        opt.step()
        times.append(time.perf_counter() - start)
    return times


def kd_ce_module(args):
    """DistillModule with this bench's objective (0.5·T²·KL + 0.5·CE) on its models; also the batches."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from distillab.config import CONFIG_DIR
    from distillab.objectives.objective import build_objective
    from distillab.training.distill_module import DistillModule

    teacher, student, batches, _ = _setup(args)
    objective = build_objective(
        {
            "kd": {
                "_target_": "distillab.objectives.terms.SoftLabelKD",
                "weight": ALPHA,
                "temperature": TEMPERATURE,
            },
            "ce": {"_target_": "distillab.objectives.terms.HardLabelCE", "weight": 1 - ALPHA},
        }
    )
    # the optimizer as distillab-distill builds it (conf/optimizer/adamw.yaml: betas, fused), at this LR
    optimizer = instantiate(OmegaConf.load(os.path.join(CONFIG_DIR, "optimizer", "adamw.yaml")), lr=LR)
    return DistillModule(student, objective, teacher, optimizer=optimizer), batches


def distillab(args, compile: str = "false") -> list[float]:
    """DistillModule + build_objective, trained by lightning.Trainer (the real path, loggers off),
    with ``speed.compile`` = ``compile`` (compiling.py), as ``training.fit.fit`` applies it."""
    from distillab.compiling import compiled_models, compiling

    module, batches = kd_ce_module(args)
    with compiling(compile), compiled_models({"student": module.student, "teacher": module.teacher}, compile):
        return timed_fit(module, batches, gradient_clip_val=CLIP, precision=TRAINER_PRECISION[args.precision])


# The variants one run compares: the bare loop, and distillab with each speed.compile mode.
VARIANTS = {
    "bare": bare,
    "eager": lambda args: distillab(args, "false"),
    "auto": lambda args: distillab(args, "auto"),
    "compiled": lambda args: distillab(args, "true"),
}


TRAINER_PRECISION = {"float32": "32-true", "bf16": "bf16-mixed"}


def step_figures(args, applied=None, inside=None) -> dict:
    """The KD step of ``kd_ce_module`` under ``speed.compile=auto`` and, if given, the context
    ``applied(student)`` (fake quantization, a tuning kind): median tokens/s of the steps after the
    warm-up and the process's peak RSS, plus ``inside(student)``'s figures taken in that context."""
    import contextlib

    from distillab.compiling import compiling

    module, batches = kd_ce_module(args)
    extra = {}
    with compiling("auto"), applied(module.student) if applied else contextlib.nullcontext():
        extra = inside(module.student) if inside else {}
        times = timed_fit(
            module, batches, gradient_clip_val=CLIP, precision=TRAINER_PRECISION[args.precision]
        )
    return {
        "tokens_per_s": args.batch * args.seq / statistics.median(times[args.warmup :]),
        # a variant whose steps differ by design (a search every N-th step) is judged on the mean
        "tokens_per_s_mean": args.batch * args.seq / statistics.mean(times[args.warmup :]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **extra,
    }


def timed_fit(
    module, batches, gradient_clip_val: float | None = None, precision: str = "32-true"
) -> list[float]:
    """Train ``module`` on ``batches`` (one step each) with a Lightning Trainer; seconds per step."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    rows = [{"input_ids": b, "attention_mask": torch.ones_like(b), "labels": b} for b in batches]
    times: list[float] = []

    class StepTimer(L.Callback):
        def on_train_batch_start(self, *a):
            self.start = time.perf_counter()

        def on_train_batch_end(self, *a):
            times.append(time.perf_counter() - self.start)

    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=len(rows),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=gradient_clip_val,
        precision=precision,
        callbacks=[StepTimer()],
        num_sanity_val_steps=0,
    )
    trainer.fit(module, train_dataloaders=DataLoader(rows, batch_size=None))
    return times


def model_flops_per_token(args) -> float:
    """Teacher forward (2 FLOPs per parameter per token) + student forward and backward (6)."""
    teacher, student, _, _ = _setup(args)
    return 2 * teacher.num_parameters() + 6 * student.num_parameters()


def child(args) -> None:
    times = VARIANTS[args.child](args)
    steady = times[args.warmup :]
    tokens = args.batch * args.seq
    print(
        json.dumps(
            {
                "tokens_per_s": tokens / statistics.median(steady),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                # what the first step cost beyond a steady one: compilation, for the compiled variants
                "first_step_extra_s": times[0] - statistics.median(steady),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    step_bench_arguments(parser)
    parser.add_argument(
        "--precisions", nargs="+", choices=["float32", "bf16"], help="default: float32, and bf16 where native"
    )
    parser.add_argument(
        "--allocator", default="reuse", help="process.ALLOCATORS (bench/allocator.py compares them)"
    )
    parser.add_argument("--precision", choices=["float32", "bf16"], default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    sys.path.insert(0, os.path.dirname(__file__))
    from machine import describe, header

    info = describe(args.threads)
    print(header(info))
    precisions = args.precisions or (["float32", "bf16"] if info["native_bf16"] else ["float32"])
    if "bf16" not in precisions:
        print("bf16 not measured: not native on this CPU (pass --precisions float32 bf16 to force it)")
    flops = model_flops_per_token(args)
    passthrough = [
        a for a in sys.argv[1:] if a not in ("--precisions", "float32", "bf16", "--variants", *VARIANTS)
    ]
    model = "tiny:llama" if args.tiny else "SmolLM2-135M (30 -> 24 layers)"
    print(
        f"KD train step, {model}, batch {args.batch} x seq {args.seq}, {args.threads} threads, "
        f"{args.steps} timed steps after {args.warmup} warm-up, median of {args.repeats} runs each; "
        f"model FLOPs {flops / 1e9:.3f} GFLOP/token"
    )
    medians = {}
    for precision in precisions:
        results = {v: [] for v in args.variants}
        for _ in range(args.repeats):
            for variant in results:  # alternate so drift on the machine hits both alike
                out = subprocess.run(
                    [sys.executable, __file__, *passthrough, "--precision", precision, "--child", variant],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                results[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
        med = {v: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for v, runs in results.items()}
        medians[precision] = med
        peak = info["peak_gflops"][precision]
        print(f"precision {precision} (measured {precision} matmul peak {peak:.1f} GFLOP/s):")
        for v, m in med.items():
            share = m["tokens_per_s"] * flops / 1e9 / peak
            print(
                f"  {v:9s}  {m['tokens_per_s']:8.1f} tokens/s   peak RSS {m['peak_rss_mb']:8.1f} MB   "
                f"model FLOPs {100 * share:5.1f}% of the {precision} peak   first step +{m['first_step_extra_s']:.1f} s"
            )
        speed = {v: m["tokens_per_s"] for v, m in med.items()}
        for v in ("eager", "auto", "compiled"):
            if v in speed and "bare" in speed:
                goal = " (goal >= 1.0 for the compiled step)" if v != "eager" else ""
                print(f"  throughput ratio {v} / bare: {speed[v] / speed['bare']:.3f}{goal}")
        for v in ("auto", "compiled"):
            if v in speed and "eager" in speed:
                extra = med[v]["first_step_extra_s"] - med["eager"]["first_step_extra_s"]
                gain = 1 / speed["eager"] - 1 / speed[v]  # seconds per token saved
                steps = extra / (gain * args.batch * args.seq) if gain > 0 else float("inf")
                print(
                    f"  throughput ratio {v} / eager: {speed[v] / speed['eager']:.3f} (goal >= 1.6); "
                    f"compilation {extra:.1f} s, earned back after {steps:.0f} steps"
                )
        if "eager" in med and "bare" in med:
            print(
                f"  peak memory ratio eager / bare: {med['eager']['peak_rss_mb'] / med['bare']['peak_rss_mb']:.3f}"
            )
    if len(medians) == 2:
        for v in medians["bf16"]:
            ratio = medians["bf16"][v]["tokens_per_s"] / medians["float32"][v]["tokens_per_s"]
            print(f"  {v} bf16 / float32 tokens/s: {ratio:.2f}")


if __name__ == "__main__":
    main()
