"""Tiny randomly initialised causal LMs and an offline tokenizer, built in-process in seconds.

Used by tests and by ``tiny:<arch>`` model specs. The tokenizer is a byte-level BPE trained on a
fixed built-in text, so it needs no network and is identical on every machine.
"""

from __future__ import annotations

import functools

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config

from distillab.errors import DistillabError

EOS = "<|endoftext|>"
PAD = "<|pad|>"
BOS = "<|bos|>"
UNK = "<|unk|>"

_TRAINING_TEXT = """
Once upon a time there was a little model that wanted to learn. The teacher was large and wise,
and the student was small and quick. Every day the student read stories and answered questions.
Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips
in May. How many clips did Natalia sell altogether in April and May? Answer: 48 + 24 = 72. #### 72
The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 10 + - * / = ( ) , . ? !
Science: plants need sunlight and water to grow. The earth orbits the sun once a year.
def add(a, b):\n    return a + b\n
"""

ARCHITECTURES = ("llama", "qwen2")


@functools.lru_cache(maxsize=4)
def _tokenizer_json(vocab_size: int) -> str:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_TRAINING_TEXT] * 4, trainer=trainer)
    return tok.to_str()


def tiny_tokenizer(vocab_size: int = 384, bos: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (any text encodes) with EOS and PAD tokens.

    ``bos=True``: one more token, BOS, that the tokenizer puts in front of every text, as Gemma's,
    Llama 3's and Mistral's do (the BPE vocabulary is unchanged, BOS gets the next id).
    """
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json(vocab_size)))
    tok.eos_token, tok.pad_token = EOS, PAD
    tok.model_max_length = 256
    if bos:
        tok.add_special_tokens({"bos_token": BOS})
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.bos_token_id)]
        )
    return tok


@functools.lru_cache(maxsize=2)
def _metaspace_json(vocab_size: int) -> str:
    tok = Tokenizer(models.BPE(unk_token=UNK))
    # like Gemma's: no space put in front of a text
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    tok.decoder = decoders.Metaspace(prepend_scheme="never")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[UNK, EOS, PAD, BOS], show_progress=False
    )
    tok.train_from_iterator([_TRAINING_TEXT] * 4, trainer=trainer)
    return tok.to_str()


def tiny_metaspace_tokenizer(vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """A second, different tokenizer for cross-tokenizer tests: SentencePiece-style (a space is
    ``▁``, as in Gemma's), another vocabulary size, and BOS in front of every text like Gemma's."""
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_metaspace_json(vocab_size)))
    tok.add_special_tokens({"unk_token": UNK, "eos_token": EOS, "pad_token": PAD, "bos_token": BOS})
    tok.model_max_length = 256
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.bos_token_id)]
    )
    return tok


def tiny_config(arch: str, vocab_size: int, **overrides):
    """A small config of the given architecture (Llama or Qwen2 shapes, grouped-query attention)."""
    base = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    base.update(overrides)
    if arch == "llama":
        return LlamaConfig(**base)
    if arch == "qwen2":
        return Qwen2Config(**base)
    raise DistillabError(
        f"model.name_or_path: unknown tiny architecture {arch!r}; valid: tiny:llama, tiny:qwen2 (+bos: "
        "a tokenizer that adds BOS, e.g. tiny:llama+bos)"
    )


def build_tiny(arch: str = "llama", seed: int = 0, dtype: torch.dtype = torch.float32, **overrides):
    """Return ``(model, tokenizer)``: a random tiny causal LM of ``arch`` and the tiny tokenizer.

    ``arch`` may end in ``+bos`` (``tiny:llama+bos``): the tokenizer then adds BOS, like Gemma's;
    or in ``+sp``: another tokenizer altogether (:func:`tiny_metaspace_tokenizer`, cross-tokenizer tests).
    """
    arch, suffix = arch.split("+", 1) if "+" in arch else (arch, "")
    if suffix not in ("", "bos", "sp"):
        raise DistillabError(f"model.name_or_path: unknown tiny tokenizer '+{suffix}'; valid: +bos, +sp")
    bos = suffix in ("bos", "sp")
    tokenizer = tiny_metaspace_tokenizer() if suffix == "sp" else tiny_tokenizer(bos=bos)
    vocab_size = overrides.pop("vocab_size", len(tokenizer))
    config = tiny_config(arch, vocab_size=vocab_size, **overrides)
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.bos_token_id = tokenizer.bos_token_id if bos else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer
