"""KD train-step throughput and peak memory: distillab's DistillModule under a Lightning Trainer vs
a bare PyTorch loop doing the same math on the same model and batch, measured in one run.

Each variant runs in its own fresh subprocess (so peak RSS is its own), the two alternating
``--repeats`` times; the medians are compared.

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

SMOLLM2 = os.path.join(
    os.environ.get("DISTILLAB_CACHE_DIR", os.path.expanduser("~/.cache/distillab")),
    "models",
    "SmolLM2-135M-Instruct",
)
ALPHA, TEMPERATURE, LR, CLIP = 0.5, 2.0, 1e-4, 1.0


def _setup(args):
    import torch

    from distillab.config import set_malloc_mmap_threshold
    from distillab.models.loading import load_model
    from distillab.models.spec import ModelSpec
    from distillab.models.student import drop_layers_student

    torch.set_num_threads(args.threads)
    set_malloc_mmap_threshold(4)  # as the entry points do (conf: malloc_mmap_threshold_mb), every variant
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


def bare(args) -> list[float]:
    """The same step written directly: teacher no-grad forward, student forward, loss, backward, clip, step."""
    import torch
    import torch.nn.functional as F

    teacher, student, batches, _ = _setup(args)
    opt = torch.optim.AdamW(student.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.0)
    times = []
    for ids in batches:
        start = time.perf_counter()
        with torch.no_grad():
            t_logits = teacher(input_ids=ids).logits[:, :-1].float()
        s_logits = student(input_ids=ids).logits[:, :-1].float()
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


def distillab(args) -> list[float]:
    """DistillModule + build_objective, trained by lightning.Trainer (the real path, loggers off)."""
    import functools

    import torch

    from distillab.objectives.objective import build_objective
    from distillab.training.distill_module import DistillModule

    teacher, student, batches, _ = _setup(args)
    objective = build_objective(
        {"kd": {"weight": ALPHA, "temperature": TEMPERATURE}, "ce": {"weight": 1 - ALPHA}}
    )
    optimizer = functools.partial(torch.optim.AdamW, lr=LR, betas=(0.9, 0.95), weight_decay=0.0)
    module = DistillModule(student, objective, teacher, optimizer=optimizer)
    return timed_fit(module, batches, gradient_clip_val=CLIP)


def timed_fit(module, batches, gradient_clip_val: float | None = None) -> list[float]:
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
        callbacks=[StepTimer()],
        num_sanity_val_steps=0,
    )
    trainer.fit(module, train_dataloaders=DataLoader(rows, batch_size=None))
    return times


def child(args) -> None:
    times = {"bare": bare, "distillab": distillab}[args.child](args)
    steady = times[args.warmup :]
    tokens = args.batch * args.seq
    print(
        json.dumps(
            {
                "tokens_per_s": tokens / statistics.median(steady),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=["bare", "distillab"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    passthrough = [a for a in sys.argv[1:]]
    results = {"bare": [], "distillab": []}
    for _ in range(args.repeats):
        for variant in results:  # alternate so drift on the machine hits both alike
            out = subprocess.run(
                [sys.executable, __file__, *passthrough, "--child", variant],
                capture_output=True,
                text=True,
                check=True,
            )
            results[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {v: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for v, runs in results.items()}
    model = "tiny:llama" if args.tiny else "SmolLM2-135M (30 -> 24 layers)"
    print(
        f"KD train step, {model}, batch {args.batch} x seq {args.seq}, {args.threads} threads, "
        f"{args.steps} timed steps after {args.warmup} warm-up, median of {args.repeats} runs each"
    )
    for v, m in med.items():
        print(f"  {v:9s}  {m['tokens_per_s']:8.1f} tokens/s   peak RSS {m['peak_rss_mb']:8.1f} MB")
    print(
        f"  throughput ratio distillab / bare: {med['distillab']['tokens_per_s'] / med['bare']['tokens_per_s']:.3f} (goal >= 0.95)"
    )
    print(
        f"  peak memory ratio distillab / bare: {med['distillab']['peak_rss_mb'] / med['bare']['peak_rss_mb']:.3f}"
    )


if __name__ == "__main__":
    main()
