"""The KD loss alone, teacher logits a chunk of positions at a time vs on full logits: time per
forward + backward, interleaved, at vocabularies 49,152 (SmolLM2) and 262,144 (Gemma-3).

A whole training step (``bench/teacher_kinds.py``) runs the models too, and on a shared 2-core
machine the same step's time varies from one process to the next (12.5-16.9 s for one kd step in
three processes on 2026-11-30), which hides a few percent. The two
paths differ only in the loss and in how the teacher's LM head is applied, so this bench times just
that: the teacher's head on its final hidden states and the divergence's value and gradient with
respect to the student's logits, the variants alternating within one process, round after round,
reported as medians and as the per-round ratio (chunked / full) with its range. Synthetic tensors of
the real shapes (batch x seq x vocab, hidden 576 / 640); no model files needed.

    python bench/kd_loss.py                            # both vocabularies, forward KL, 2 threads
    python bench/kd_loss.py --vocab 49152 --chunks 256 1024 --divergence jsd
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, header  # noqa: E402

HIDDEN = {49152: 576, 262144: 640}  # SmolLM2-135M's and Gemma-3-270m's hidden widths


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def loss_runners(vocab: int, args):
    """name -> a function running one forward + backward of that variant on fresh student logits."""
    import torch

    from distillab.objectives.chunked_kd import chunked_soft_label_kd
    from distillab.objectives.divergences import get_divergence
    from distillab.objectives.terms import soft_label_kd

    g = torch.Generator().manual_seed(0)
    hidden = HIDDEN.get(vocab, 576)
    head_weight = torch.randn(vocab, hidden, generator=g) * 0.05
    teacher_hidden = torch.randn(args.batch, args.seq, hidden, generator=g)
    mask = torch.ones(args.batch, args.seq, dtype=torch.bool)
    student = torch.randn(args.batch, args.seq, vocab, generator=g) * 2.0
    divergence = get_divergence(args.divergence)

    def head(h):
        return h @ head_weight.T

    def full():
        s = student.clone().requires_grad_(True)
        with torch.no_grad():
            t_logits = head(teacher_hidden)  # the whole (B, T, V) teacher logits, as kd_full forms them
        soft_label_kd(t_logits, s, mask, args.temperature, divergence).backward()

    def chunked(chunk):
        def run():
            s = student.clone().requires_grad_(True)
            chunked_soft_label_kd(
                s, teacher_hidden, head, mask, args.temperature, divergence, chunk
            ).backward()

        return run

    runners = {"full": full}
    runners.update({f"chunked {chunk}": chunked(chunk) for chunk in args.chunks})
    return runners


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, nargs="+", default=[49152, 262144])
    parser.add_argument("--chunks", type=int, nargs="+", default=[256], help="chunk_tokens values")
    parser.add_argument("--divergence", default="forward_kl")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    print(header(describe(args.threads)))
    print(
        f"KD loss ({args.divergence}, T={args.temperature}) forward + backward incl. the teacher's head, "
        f"batch {args.batch} x seq {args.seq}, float32, {args.threads} threads; {args.rounds} rounds, "
        "variants in shuffled order each round after one warm-up call each"
    )
    order = random.Random(0)
    for vocab in args.vocab:
        runners = loss_runners(vocab, args)
        for run in runners.values():
            run()  # warm-up: first-touch page faults and allocator growth
        times = {name: [] for name in runners}
        for _ in range(args.rounds):
            names = list(runners)
            order.shuffle(names)
            for name in names:
                times[name].append(timed(runners[name]))
        print(
            f"\nvocab {vocab:,}\n  {'variant':14s} {'median s':>9s} {'x full':>7s} {'per-round ratio range':>22s}"
        )
        for name, ts in times.items():
            ratios = [t / f for t, f in zip(ts, times["full"], strict=True)]
            print(
                f"  {name:14s} {statistics.median(ts):9.3f} {statistics.median(ratios):7.3f} "
                f"{min(ratios):10.3f} .. {max(ratios):.3f}"
            )


if __name__ == "__main__":
    main()
