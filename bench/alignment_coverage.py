"""How much of a student's training text a cross-tokenizer teacher can speak to (``cross_kd``).

On the study's own packed training blocks (SmolLM2 tokens, block 256), through distillab's
``TokenAligner`` and ``shared_tokens``:

- **paired**: share of the student's predicting positions that get a teacher distribution (both
  tokenizers cut the text at the same character there); the others carry no teacher signal at all.
- **next token shared**: at paired positions, share whose next student token has the same text in
  the teacher's vocabulary (what hybrid's exact part can compare token by token).
- with ``--teacher-mass``: the teacher's and the student's mean probability on shared tokens at
  paired positions (T = 1) — how much of each distribution the exact part sees; the rest only
  enters through ULD's sorted comparison. Needs both models' forward passes (float32).

    python bench/alignment_coverage.py --student ~/.cache/distillab/models/SmolLM2-135M-Instruct \\
        --teacher ~/.cache/distillab/models/gemma-3-270m --blocks 200 --teacher-mass 16
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_name  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", required=True, help="the student's HF folder")
    parser.add_argument("--teacher", required=True, help="the teacher's HF folder")
    parser.add_argument(
        "--corpus", default="corpus/redpajama_sample/*.jsonl", help="jsonl files under the data dir"
    )
    parser.add_argument("--blocks", type=int, default=200, help="training blocks to align")
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--teacher-mass", type=int, default=0, help="blocks to run both models on (0: skip)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from distillab.data.corpus import read_documents
    from distillab.data.packing import packed_blocks, split_documents
    from distillab.data.paths import resolve_data_dir
    from distillab.data.token_alignment import TokenAligner, shared_tokens
    from distillab.models.fetch import cache_dir

    torch.set_num_threads(args.threads)
    student_tok = AutoTokenizer.from_pretrained(args.student)
    teacher_tok = AutoTokenizer.from_pretrained(args.teacher)
    docs = read_documents(
        {"format": "jsonl", "files": args.corpus, "text_field": "text"}, resolve_data_dir(None)
    )
    train_docs, _ = split_documents(docs, 0.02, 0)  # the study's split (data/_corpus.yaml, seed 0)
    # the study's own blocks (the same cache entry training reads), in stored order
    blocks = packed_blocks(
        student_tok, train_docs, args.block_size, cache_dir() / "tokenized", "redpajama-train"
    )
    blocks = blocks[: args.blocks]
    student_shared, teacher_shared = shared_tokens(student_tok, teacher_tok)
    print(f"machine: {cpu_name()}, {args.threads} threads")
    print(
        f"vocabularies: student {len(student_tok)}, teacher {len(teacher_tok)}; "
        f"{len(student_shared)} tokens share their text ({len(student_shared) / len(student_tok):.1%} of the student's)"
    )

    start = time.time()
    batch = TokenAligner(student_tok, teacher_tok)(blocks, torch.ones_like(blocks))
    pairs = batch.pairs
    predicting = blocks.shape[0] * (blocks.shape[1] - 1)
    is_shared = torch.zeros(len(student_tok), dtype=torch.bool)
    is_shared[student_shared] = True
    next_tokens = blocks[pairs[:, 0], pairs[:, 1] + 1]
    print(
        f"{blocks.shape[0]} blocks x {blocks.shape[1]} tokens aligned in {time.time() - start:.1f} s: "
        f"paired {pairs.shape[0] / predicting:.1%} of {predicting} predicting positions; "
        f"next token shared at {is_shared[next_tokens].float().mean():.1%} of the paired ones; "
        f"teacher tokens per student token {batch.teacher_mask.sum() / blocks.numel():.2f}"
    )
    if args.teacher_mass:
        teacher_and_student_mass(args, blocks[: args.teacher_mass], batch, student_shared, teacher_shared)


def teacher_and_student_mass(args, blocks, batch, student_shared, teacher_shared) -> None:
    """Mean probability on shared tokens at the paired positions of the first ``len(blocks)`` rows of
    ``batch`` (the aligned batch of all blocks)."""
    import torch
    from transformers import AutoModelForCausalLM

    masses = {}
    for name, folder, ids, mask, shared, column in (
        ("student", args.student, blocks, torch.ones_like(blocks), student_shared, 1),
        ("teacher", args.teacher, batch.teacher_ids, batch.teacher_mask, teacher_shared, 2),
    ):
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        total = []
        with torch.no_grad():
            # one row at a time: a 262k-vocabulary row of logits is 1 MB per token
            for b in range(blocks.shape[0]):
                rows = batch.pairs[batch.pairs[:, 0] == b]
                logits = model(input_ids=ids[b : b + 1], attention_mask=mask[b : b + 1]).logits[0]
                probs = torch.softmax(logits[rows[:, column]].float(), dim=-1)
                total.append(probs[:, shared].sum(-1))
        masses[name] = torch.cat(total)
        del model
    print(
        f"mean probability on shared tokens at {masses['student'].numel()} paired positions "
        f"({blocks.shape[0]} blocks, float32): student {masses['student'].mean():.3f}, "
        f"teacher {masses['teacher'].mean():.3f}"
    )


if __name__ == "__main__":
    main()
