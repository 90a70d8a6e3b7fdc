"""Scores of a GGUF file computed by llama.cpp itself: the file a user ships, in the runtime behind
Ollama and llama-server (llama-cpp-python, the optional ``gguf-runtime`` extra).

``evaluate_gguf`` runs the same suite as :func:`suite.evaluate_suite` — lm-eval's tasks on the same
items, the same perplexity blocks — with every logit coming from llama.cpp's own kernels on the
file's own quantized blocks:

- lm-eval's tasks go through :class:`LlamaCppLM`, an lm-eval ``TemplateLM`` in process (no server).
  Text is split by the file's own tokenizer (llama.cpp's, as a user's llama.cpp does); the request's
  continuation is scored by a float32 log-softmax of llama.cpp's logits at the positions that
  predict it, exactly as lm-eval's HF model scores it; ``generate_until`` decodes greedily in
  llama.cpp with the task's stop strings. Requests sharing a context reuse llama.cpp's KV cache.
- Perplexity scores the very token blocks the torch path scores (the input tokenizer's, with BOS
  where it adds one), so each block is a paired item with its torch score.

Every entry point fails with one line naming the extra when llama-cpp-python is not installed.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distillab.evaluation.harness import run_tasks_with_items
from distillab.evaluation.perplexity import perplexity_blocks
from distillab.evaluation.suite import Evaluation, add_perplexity, read_perplexity_documents
from distillab.quantization.llama_cpp import require_llama_cpp

log = logging.getLogger(__name__)


class LlamaCppScorer:
    """One llama.cpp context over a GGUF file: logits of a token sequence, reusing the KV cache of
    the longest prefix it shares with the previous sequence."""

    def __init__(self, path: str | Path, context: int, threads: int):
        llama_cpp = require_llama_cpp("eval in llama.cpp")
        self.llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=context,
            n_batch=min(context, 512),
            n_threads=threads,
            logits_all=True,  # a row of logits per position, as a causal LM's forward gives
            verbose=False,
            seed=0,
        )
        self.version = getattr(llama_cpp, "__version__", "?")

    def logits(self, tokens: list[int]) -> torch.Tensor:
        """``(len(tokens), vocab)`` float32 logits, row ``i`` predicting token ``i + 1``."""
        llm = self.llm
        cached = llm.input_ids[: llm.n_tokens].tolist()
        shared = 0
        for a, b in zip(cached, tokens, strict=False):
            if a != b:
                break
            shared += 1
        llm.n_tokens = min(shared, len(tokens) - 1)  # at least the last token is evaluated again
        llm.eval(tokens[llm.n_tokens :])
        return torch.from_numpy(np.array(llm.scores[: len(tokens)], dtype=np.float32))

    def close(self) -> None:
        self.llm.close()


@functools.cache
def llama_cpp_lm_class() -> type:
    """:class:`LlamaCppLM`, made on first use (lm-eval imports slowly)."""
    from lm_eval.api.model import TemplateLM

    class LlamaCppLM(TemplateLM):
        """lm-eval's model interface over :class:`LlamaCppScorer` (loglikelihood and greedy
        generation; rolling loglikelihood is distillab's own perplexity, not an lm-eval task here)."""

        def __init__(self, scorer: LlamaCppScorer, prefix_token_id: int | None, max_length: int):
            super().__init__()
            self.scorer, self._prefix, self.max_length = scorer, prefix_token_id, max_length

        @property
        def eot_token_id(self) -> int:
            return self.scorer.llm.token_eos()

        @property
        def prefix_token_id(self) -> int:
            return self.eot_token_id if self._prefix is None else self._prefix

        def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
            return self.scorer.llm.tokenize(string.encode(), add_bos=bool(add_special_tokens), special=True)

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
            results = []
            for pair, context, continuation in requests:
                whole = (context + continuation)[-(self.max_length + 1) :]
                logits = self.scorer.logits(whole[:-1])[-len(continuation) :]
                logp = torch.log_softmax(logits, dim=-1)
                target = torch.tensor(continuation)
                answer = (
                    float(logp.gather(-1, target[:, None]).sum()),
                    bool((logp.argmax(-1) == target).all()),
                )
                results.append(answer)
                if pair is not None:
                    self.cache_hook.add_partial("loglikelihood", pair, answer)
            return results

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError(
                "eval in llama.cpp: rolling loglikelihood tasks are not scored here; perplexity is "
                "eval.perplexity (distillab's own blocks)"
            )

        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            outputs = []
            for request in requests:
                context, settings = request.args
                until = settings.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                new_tokens = int(settings.get("max_gen_toks", 256))
                prompt = self.tok_encode(context)[-(self.max_length - new_tokens) :]
                out = self.scorer.llm.create_completion(
                    prompt=prompt, max_tokens=new_tokens, temperature=0.0, stop=until or None
                )
                outputs.append(out["choices"][0]["text"])
            return outputs

    return LlamaCppLM


def evaluate_gguf(
    path: str | Path,
    tokenizer,
    eval_cfg: dict[str, Any],
    work_dir: Path,
    data_dir: str | None,
    threads: int = 2,
) -> tuple[Evaluation, str]:
    """``eval_cfg``'s suite on the GGUF file at ``path``, every logit from llama.cpp; returns the
    evaluation and the runtime's name with its version. ``tokenizer`` (the input model's) gives the
    perplexity blocks and lm-eval's prefix token, as for the torch score it is paired with."""
    from distillab.config import to_plain
    from distillab.data.packing import bos_token_id
    from distillab.data.paths import resolve_data_dir

    eval_cfg = to_plain(eval_cfg)
    local_dir = resolve_data_dir(data_dir) if eval_cfg.get("use_local_data", True) else None
    context = int(eval_cfg.get("max_length") or 2048)
    scorer = LlamaCppScorer(path, context, threads)
    try:
        lm = llama_cpp_lm_class()(scorer, bos_token_id(tokenizer), context)
        tasks = eval_cfg.get("tasks") or {}
        metrics, per_item = run_tasks_with_items(None, tokenizer, tasks, work_dir, local_dir, lm=lm)
        for name, spec in (eval_cfg.get("perplexity") or {}).items():
            docs = read_perplexity_documents(name, spec, data_dir)
            blocks = perplexity_blocks(tokenizer, docs, spec.get("block_size", 512), spec.get("max_tokens"))
            nll_sums = [block_nll_in(scorer, block.tolist()) for block in blocks]
            add_perplexity(metrics, per_item, name, nll_sums, [blocks.shape[1] - 1] * len(nll_sums))
    finally:
        scorer.close()
    return Evaluation(metrics, per_item), f"llama.cpp (llama-cpp-python {scorer.version})"


def block_nll_in(scorer: LlamaCppScorer, block: list[int]) -> float:
    """Summed next-token NLL of one block, from llama.cpp's logits (float32 log-softmax)."""
    logp = torch.log_softmax(scorer.logits(block[:-1]), dim=-1)
    return float(-logp.gather(-1, torch.tensor(block[1:])[:, None]).double().sum())
