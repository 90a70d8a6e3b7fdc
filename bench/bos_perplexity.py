"""WikiText-2 perplexity of a model with and without BOS at the start of each block, through
distillab's own ``perplexity()``: what following the tokenizer's special tokens is worth.

For a tokenizer that adds BOS (Gemma, Llama 3, Mistral) distillab starts every block with BOS; the
"without" run patches that off, as distillab did before. For SmolLM2 (no BOS) the two are equal.

    python bench/bos_perplexity.py --model /path/folder --gguf gemma-3-270m-q4_k_m.gguf
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_name  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="an HF folder, or the folder holding --gguf")
    parser.add_argument("--gguf", help="a GGUF file inside --model")
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from distillab.data.corpus import read_documents
    from distillab.data.packing import bos_token_id
    from distillab.data.paths import resolve_data_dir
    from distillab.evaluation import perplexity as ppl
    from distillab.models.loading import load_model
    from distillab.models.spec import ModelSpec

    torch.set_num_threads(args.threads)
    start = time.time()
    model, tokenizer = load_model(ModelSpec(name_or_path=args.model, gguf_file=args.gguf))
    print(f"machine: {cpu_name()}, {args.threads} threads, float32; loaded in {time.time() - start:.0f} s")
    print(f"tokenizer adds BOS: {bos_token_id(tokenizer) is not None} (bos id {tokenizer.bos_token_id})")
    docs = read_documents({"format": "text", "files": "wikitext2/wiki.test.raw"}, resolve_data_dir(None))
    kwargs = dict(block_size=args.block_size, max_tokens=args.max_tokens, batch_size=4)
    with_bos = ppl.perplexity(model, tokenizer, docs, **kwargs)
    with mock.patch.object(ppl, "bos_token_id", lambda _tokenizer: None):
        without = ppl.perplexity(model, tokenizer, docs, **kwargs)
    for name, result in (("with BOS (distillab)", with_bos), ("without BOS (before)", without)):
        print(
            f"  {name:22s} ppl {result['ppl']:8.2f}  nll {result['nll']:.4f}  predicted tokens {int(result['tokens'])}"
        )


if __name__ == "__main__":
    main()
