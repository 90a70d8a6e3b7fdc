"""Each model family's own special tokens: a tokenizer that adds BOS gets BOS at the start of every
block (training, validation, calibration, perplexity), BOS is never a predicted token, and
tokenizers without BOS get the blocks they always did."""

from __future__ import annotations

import json

import torch

from distillab.data.datamodule import CorpusDataModule
from distillab.data.packing import bos_token_id, pack, tokenize_documents
from distillab.distill import run as distill_run
from distillab.evaluation.perplexity import perplexity
from distillab.models.tiny import build_tiny, tiny_tokenizer
from tests.conftest import compose_config, tiny_overrides

TEXT = ["The student learned from the teacher and answered questions. " * 6, "Plants need sunlight. " * 9]


def test_bos_is_detected_from_what_the_tokenizer_does():
    with_bos = tiny_tokenizer(bos=True)
    assert bos_token_id(with_bos) == with_bos.bos_token_id
    assert bos_token_id(tiny_tokenizer()) is None


def test_pack_starts_every_block_with_bos_and_keeps_the_stream():
    blocks = pack([[1, 2], [3], [4, 5, 6]], eos_id=0, block_size=4, bos_id=9)
    # stream 1 2 0 3 0 4 5 6 0 -> blocks of BOS + 3 stream tokens, tail "0" dropped
    assert blocks.tolist() == [[9, 1, 2, 0], [9, 3, 0, 4], [9, 5, 6, 0]]
    without = pack([[1, 2], [3], [4, 5, 6]], eos_id=0, block_size=4)
    assert without.tolist() == [[1, 2, 0, 3], [0, 4, 5, 6]]  # unchanged where there is no BOS


def _reference_nll(model, blocks: torch.Tensor) -> float:
    """The model's own loss with ``labels=`` (transformers shifts and averages), block by block."""
    with torch.no_grad():
        return sum(float(model(input_ids=b[None], labels=b[None]).loss) for b in blocks) / len(blocks)


def test_perplexity_matches_the_models_own_loss_with_and_without_bos():
    for arch in ("llama", "llama+bos"):
        model, tok = build_tiny(arch, seed=3)
        result = perplexity(model, tok, TEXT, block_size=16, batch_size=3)
        blocks = pack(tokenize_documents(tok, TEXT), tok.eos_token_id, 16, bos_token_id(tok))
        assert result["tokens"] == blocks.shape[0] * 15
        assert abs(result["nll"] - _reference_nll(model, blocks)) < 1e-5, arch
        if arch.endswith("+bos"):
            assert (blocks[:, 0] == tok.bos_token_id).all() and (blocks[:, 1:] != tok.bos_token_id).all()


def test_training_and_validation_blocks_of_a_bos_model_start_with_bos(tiny_corpus, tmp_path):
    _, tok = build_tiny("llama+bos")
    data = CorpusDataModule(
        tok, {"format": "jsonl", "files": "corpus/tiny.jsonl"}, str(tiny_corpus), str(tmp_path), block_size=32
    )
    data.setup()
    for blocks in (data.train_blocks, data.val_blocks):
        assert (blocks[:, 0] == tok.bos_token_id).all()
        assert (blocks[:, 1:] != tok.bos_token_id).all()  # never a target


def test_a_bos_model_distils_end_to_end(tiny_corpus, tmp_path):
    overrides = tiny_overrides(tmp_path, tiny_corpus, "model.name_or_path=tiny:llama+bos")
    results = distill_run(compose_config(overrides))
    assert json.loads((tmp_path / "results.json").read_text())["run_dir"] == results["run_dir"]
    assert "val/ppl" in results["train_metrics"]
