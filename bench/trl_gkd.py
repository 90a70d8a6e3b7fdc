"""Peer benchmark: distillab vs TRL's GKDTrainer, off-policy distillation step throughput and peak memory.

Same teacher (SmolLM2-135M, 30 layers), same student (24 layers cut from it), same batches
(``--batch`` x ``--seq`` tokens, every position a target), same divergence (forward KL at T = 1:
TRL ``beta=0``, ``lmbda=0`` = off-policy; distillab's ``kd`` term with weight 1), AdamW at the same
learning rate, gradient clipping 1.0, float32 without gradient checkpointing on both sides.
TRL's GKDConfig inherits SFTConfig's defaults, ``bf16=True`` and ``gradient_checkpointing=True``;
``trl_gkd`` turns both off so the comparison is like for like, and the ``trl_gkd_defaults``
variant (``--variants distillab trl_gkd trl_gkd_defaults``) measures TRL as it ships;
``distillab_bf16`` / ``trl_gkd_bf16`` are the like-for-like pair in bf16 (Lightning's bf16-mixed / TRL's
``bf16=True``, no recompute) for CPUs and GPUs that run bf16 natively; ``distillab_bf16_auto`` and
``distillab_bf16_compiled`` run distillab with ``speed.compile=auto`` / ``true`` (``distillab*`` is
eager, ``speed.compile=false``). Both sides use a fused AdamW: distillab's conf/optimizer/adamw.yaml,
TRL's default (``adamw_torch_fused``). On a bf16-native CPU the default variants are the bf16 ones
and TRL as it ships; elsewhere the float32 pair. Each variant
runs in its own fresh process (peak RSS is its own); variants alternate ``--repeats`` times and the
medians are compared. TRL is needed only here:

    .venv/bin/pip install trl && .venv/bin/python bench/trl_gkd.py      # make bench-trl
    .venv/bin/python bench/trl_gkd.py --tiny                             # tiny random Llama, seconds
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kd_step import _setup, timed_fit  # noqa: E402  (same teacher/student/batch construction)
from machine import step_bench_arguments  # noqa: E402

LR, CLIP = 1e-4, 1.0
DISTILLAB = ("distillab", "distillab_bf16", "distillab_bf16_auto", "distillab_bf16_compiled")
TRL = ("trl_gkd", "trl_gkd_bf16", "trl_gkd_defaults")
VARIANTS = DISTILLAB + TRL
BF16_DEFAULT = (
    "distillab_bf16",
    "distillab_bf16_auto",
    "distillab_bf16_compiled",
    "trl_gkd_bf16",
    "trl_gkd_defaults",
)


def distillab(args, bf16: bool = False, compile: str = "false") -> list[float]:
    import os

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from distillab.compiling import compiled_models, compiling
    from distillab.config import CONFIG_DIR
    from distillab.objectives.objective import build_objective
    from distillab.training.distill_module import DistillModule

    teacher, student, batches, _ = _setup(args)
    objective = build_objective(
        {
            "kd": {
                "_target_": "distillab.objectives.terms.SoftLabelKD",
                "weight": 1.0,
                "temperature": 1.0,
                "divergence": "forward_kl",
            }
        }
    )
    # the optimizer as distillab-distill builds it (fused), at TRL's betas so only the code differs
    optimizer = instantiate(
        OmegaConf.load(os.path.join(CONFIG_DIR, "optimizer", "adamw.yaml")), lr=LR, betas=(0.9, 0.999)
    )
    module = DistillModule(student, objective, teacher, optimizer=optimizer)
    # bf16: Lightning's bf16-mixed, what precision=auto picks on a bf16-native machine
    with compiling(compile), compiled_models({"student": student, "teacher": teacher}, compile):
        return timed_fit(
            module, batches, gradient_clip_val=CLIP, precision="bf16-mixed" if bf16 else "32-true"
        )


def trl_gkd(args, ships_defaults: bool = False, bf16: bool = False) -> list[float]:
    import tempfile

    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    teacher, student, batches, tokenizer = _setup(args)
    rows = [{"input_ids": row.tolist()} for batch in batches for row in batch]

    def collate(features):  # the same token blocks as distillab's, every position a target
        ids = torch.tensor([f["input_ids"] for f in features])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}

    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.start)

    config = GKDConfig(
        output_dir=tempfile.mkdtemp(),
        lmbda=0.0,  # off-policy: never generate
        beta=0.0,  # generalized JSD at beta 0 = forward KL(teacher || student)
        temperature=1.0,
        per_device_train_batch_size=args.batch,
        max_steps=len(batches),
        max_length=args.seq,
        learning_rate=LR,
        lr_scheduler_type="constant",
        max_grad_norm=CLIP,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=10_000,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
        # like for like with distillab (float32 or bf16, no recompute) unless measuring TRL as it ships
        **({} if ships_defaults else {"bf16": bf16, "gradient_checkpointing": False}),
    )
    trainer = GKDTrainer(
        model=student,
        teacher_model=teacher,
        args=config,
        train_dataset=Dataset.from_list(rows),
        data_collator=collate,
        processing_class=tokenizer,
        callbacks=[StepTimer()],
    )
    trainer.train()
    return times


def child(args) -> None:
    variants = {
        "distillab": distillab,
        "trl_gkd": trl_gkd,
        "trl_gkd_defaults": lambda a: trl_gkd(a, ships_defaults=True),
        "distillab_bf16": lambda a: distillab(a, bf16=True),
        "distillab_bf16_auto": lambda a: distillab(a, bf16=True, compile="auto"),
        "distillab_bf16_compiled": lambda a: distillab(a, bf16=True, compile="true"),
        "trl_gkd_bf16": lambda a: trl_gkd(a, bf16=True),
    }
    times = variants[args.child](args)
    print(
        json.dumps(
            {
                "tokens_per_s": args.batch * args.seq / statistics.median(times[args.warmup :]),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    step_bench_arguments(parser)
    parser.add_argument(
        "--variants", nargs="+", choices=VARIANTS, help="one distillab_bf16 or distillab at least"
    )
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    from machine import describe, header

    info = describe(args.threads)
    print(header(info))  # the machine next to every ratio below
    args.variants = args.variants or list(BF16_DEFAULT if info["native_bf16"] else ("distillab", "trl_gkd"))
    try:
        import trl  # noqa: F401
    except ImportError:
        sys.exit("error: bench/trl_gkd.py needs TRL: .venv/bin/pip install trl")
    if not {"distillab", "distillab_bf16"} & set(args.variants):
        sys.exit("error: --variants: include distillab or distillab_bf16 (the ratios are against them)")
    results: dict[str, list[dict]] = {v: [] for v in args.variants}
    for _ in range(args.repeats):
        for variant in results:  # alternate so drift on the machine hits both alike
            out = subprocess.run(
                [sys.executable, __file__, *sys.argv[1:], "--child", variant], capture_output=True, text=True
            )
            if out.returncode != 0:
                sys.exit(f"error: {variant} failed:\n{out.stderr[-3000:]}")
            results[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {v: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for v, runs in results.items()}
    import trl

    model = "tiny:llama" if args.tiny else "SmolLM2-135M (30 -> 24 layers)"
    print(
        f"off-policy KD step (forward KL, T=1), {model}, batch {args.batch} x seq {args.seq}, "
        f"{args.threads} threads, {args.steps} timed steps after {args.warmup} warm-up, median of "
        f"{args.repeats} runs each; TRL {trl.__version__} GKDTrainer"
    )
    for v, m in med.items():
        print(f"  {v:24s}  {m['tokens_per_s']:8.1f} tokens/s   peak RSS {m['peak_rss_mb']:8.1f} MB")
    for peer in [v for v in med if v in TRL]:
        # TRL in bf16 (its own defaults are bf16 too) is compared with distillab in bf16 when measured
        bf16_peer = peer in ("trl_gkd_bf16", "trl_gkd_defaults")
        ours = [v for v in med if v in DISTILLAB and (v != "distillab") == bf16_peer] or ["distillab"]
        for v in ours:
            speed = med[v]["tokens_per_s"] / med[peer]["tokens_per_s"]
            memory = med[v]["peak_rss_mb"] / med[peer]["peak_rss_mb"]
            print(
                f"  {v} / {peer}: throughput {speed:.3f} (goal >= 1.5), peak memory {memory:.3f} (goal <= 1.0)"
            )
    for v in ("distillab_bf16_auto", "distillab_bf16_compiled"):
        if v in med and "distillab_bf16" in med:
            speed = med[v]["tokens_per_s"] / med["distillab_bf16"]["tokens_per_s"]
            print(f"  {v} / distillab_bf16 (eager): throughput {speed:.3f}")


if __name__ == "__main__":
    main()
