"""lm-eval's HFLM with its log-softmax taken only over the positions a request scores.

``HFLM._loglikelihood_tokens`` takes a float32 log-softmax over the whole ``(batch, length, V)``
logits of every batch, then keeps the last few positions of each request (its continuation). For a
multiple-choice task those are a handful of the batch's positions; with a 49k vocabulary the
discarded part was the largest single cost of a bf16 evaluation after the model itself.

Here the model's logits come back wrapped in :class:`DeferredLogSoftmax`: lm-eval's whole-batch
``log_softmax`` only records the dtype it asked for, and :meth:`_select_cont_toks`, where lm-eval
cuts out each request's continuation, takes the log-softmax of that slice. Log-softmax is row-wise,
so every score is bit-for-bit what lm-eval computes itself (``tests/test_evaluation.py``).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

_LOG_SOFTMAX = {F.log_softmax, torch.log_softmax, torch.Tensor.log_softmax}


class DeferredLogSoftmax(torch.Tensor):
    """Logits whose log-softmax over the last dimension is taken when a slice of them is selected.
    Indexing and iterating keep the wrapper; :func:`materialize` computes the pending log-softmax."""

    _dtype: torch.dtype | None = None

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _LOG_SOFTMAX:
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            if dim not in (-1, args[0].dim() - 1):
                raise NotImplementedError("DeferredLogSoftmax: only a log-softmax over the vocabulary")
            out = args[0].as_subclass(cls)
            out._dtype = kwargs.get("dtype") or (args[2] if len(args) > 2 else None) or args[0].dtype
            return out
        result = super().__torch_function__(func, types, args, kwargs)
        # a slice or row of pending logits is still pending, with the same dtype
        pending = next((a._dtype for a in args if isinstance(a, cls) and a._dtype is not None), None)
        for out in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(out, cls):
                out._dtype = pending
        return result


def materialize(logits: torch.Tensor) -> torch.Tensor:
    """A plain tensor: ``logits`` log-softmaxed in the pending dtype, or as they are if none is pending."""
    if not isinstance(logits, DeferredLogSoftmax):
        return logits
    dtype, plain = logits._dtype, logits.as_subclass(torch.Tensor)
    return plain if dtype is None else F.log_softmax(plain, dim=-1, dtype=dtype)


@functools.cache
def scored_logits_hflm() -> type:
    """``HFLM`` subclass (made on first use: lm-eval imports slowly) whose log-softmax covers only
    the scored positions. Generation and everything else are HFLM's own."""
    from lm_eval.models.huggingface import HFLM

    class ScoredLogitsHFLM(HFLM):
        def _model_call(self, inps, attn_mask=None, labels=None):
            logits = super()._model_call(inps, attn_mask=attn_mask, labels=labels)
            return logits.as_subclass(DeferredLogSoftmax) if self.backend == "causal" else logits

        def _select_cont_toks(self, logits, contlen=None, inplen=None):
            return materialize(super()._select_cont_toks(logits, contlen=contlen, inplen=inplen))

    return ScoredLogitsHFLM
