"""Pruning costs, each as a ratio against a baseline measured in the same run (same process,
same calibration set, variants interleaved over repeats, median taken):

1. Scoring every layer from one calibration pass vs one plain forward pass over the same blocks.
   Goal: activation-based scores <= 1.3x. lens-KL is reported separately (it projects every layer
   through the LM head, on every ``--lens-stride``-th token).
2. Inference tokens/s of pruned models vs the 30-layer teacher: prefill (forward over the blocks)
   and greedy decoding with a KV cache. 24 layers: ideal 1.25x, goal >= 1.2x. Also a width-pruned
   model and a 2:4-sparse one (dense kernels: expect no speed-up from zeros).

    python bench/prune_costs.py            # SmolLM2-135M (make models)
    python bench/prune_costs.py --tiny     # tiny random Llama, seconds
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kd_step import SMOLLM2  # noqa: E402  (the de-quantized model folder in the cache)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--blocks", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lens-stride", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from machine import describe, header

    print(header(describe(args.threads)))  # the machine next to every ratio below

    from distillab.models.loading import load_model
    from distillab.models.spec import ModelSpec
    from distillab.models.surgery import remove_layers
    from distillab.process import set_allocator
    from distillab.pruning.layer_scores import activation_layer_scores, least_important
    from distillab.pruning.scores import weight_scores
    from distillab.pruning.unstructured import apply_masks, two_four_masks
    from distillab.pruning.width import prune_heads, prune_neurons, structure_scores

    torch.set_num_threads(args.threads)
    set_allocator("reuse")  # as the entry points do (conf: allocator)
    model, _ = load_model(ModelSpec(name_or_path="tiny:llama" if args.tiny else SMOLLM2))
    model.eval()
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    blocks = torch.randint(0, vocab, (args.blocks, args.seq), generator=g)
    batches = [blocks[i : i + args.batch] for i in range(0, args.blocks, args.batch)]

    def forward_all(m):
        with torch.no_grad():
            for ids in batches:
                m(input_ids=ids)

    # 1. scoring cost
    variants = {
        "plain forward": lambda: forward_all(model),
        "block_influence + angular": lambda: activation_layer_scores(
            model, batches, ["block_influence", "angular"]
        ),
        f"lens_kl (every {args.lens_stride}th token)": lambda: activation_layer_scores(
            model, batches, ["lens_kl"], lens_stride=args.lens_stride
        ),
    }
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            times[name].append(timed(fn))
    base = statistics.median(times["plain forward"])
    n_layers = model.config.num_hidden_layers
    print(
        f"scoring all {n_layers} layers, {args.blocks} x {args.seq} tokens, batch {args.batch}, "
        f"{args.threads} threads, median of {args.repeats}"
    )
    for name, t in times.items():
        print(
            f"  {name:32s} {statistics.median(t):7.2f} s  {statistics.median(t) / base:6.3f} x plain forward"
        )
    print("  goal: activation-based scores <= 1.3 x one plain forward pass")

    # 2. inference speed of pruned models
    num_remove = max(1, round(n_layers * 0.2))
    bi = activation_layer_scores(model, batches[:1], ["block_influence"])["block_influence"]
    cut = remove_layers(model, least_important(bi, num_remove))
    mags = weight_scores(model, "magnitude")
    narrow = copy.deepcopy(model)
    structures = structure_scores(mags, narrow)
    kv = narrow.config.num_key_value_heads
    heads = kv * max(1, (narrow.config.num_attention_heads // kv) * 2 // 3)
    prune_heads(narrow, structures, heads, kv)
    prune_neurons(narrow, structures, narrow.config.intermediate_size * 2 // 3)
    sparse = copy.deepcopy(model)
    apply_masks(sparse, two_four_masks(mags))
    models = {
        f"teacher ({n_layers} layers)": model,
        f"{n_layers - num_remove} layers (BI)": cut,
        f"width: {heads} heads, MLP {narrow.config.intermediate_size}": narrow,
        "2:4 sparse (dense kernels)": sparse,
    }
    prompt = blocks[:1, :32]

    def decode(m):
        with torch.no_grad():
            m.generate(
                prompt, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False
            )

    prefill = {name: [] for name in models}
    decoding = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, m in models.items():
            prefill[name].append(timed(lambda m=m: forward_all(m)))
            decoding[name].append(timed(lambda m=m: decode(m)))
    tokens = blocks.numel()
    base_p, base_d = (
        statistics.median(prefill[f"teacher ({n_layers} layers)"]),
        statistics.median(decoding[f"teacher ({n_layers} layers)"]),
    )
    print(
        f"\ninference, prefill {tokens} tokens (batch {args.batch}) and greedy decode {args.new_tokens} tokens (batch 1)"
    )
    print(
        f"  {'model':34s} {'params M':>8s} {'prefill tok/s':>13s} {'x':>6s} {'decode tok/s':>12s} {'x':>6s}"
    )
    for name, m in models.items():
        p, d = statistics.median(prefill[name]), statistics.median(decoding[name])
        params = sum(x.numel() for x in m.parameters()) / 1e6
        print(
            f"  {name:34s} {params:8.1f} {tokens / p:13.0f} {base_p / p:6.3f} "
            f"{args.new_tokens / d:12.1f} {base_d / d:6.3f}"
        )
    print(
        f"  goal: {n_layers - num_remove} layers >= 1.2 x the teacher's tokens/s (ideal {n_layers / (n_layers - num_remove):.2f})"
    )


if __name__ == "__main__":
    main()
