"""Packing, splitting and caching of corpora."""

from __future__ import annotations

import pytest
import torch

from distillab.data.corpus import read_documents
from distillab.data.datamodule import CorpusDataModule
from distillab.data.packing import pack, split_documents
from distillab.errors import DistillabError
from distillab.models.tiny import tiny_tokenizer


def test_pack_puts_eos_between_documents_and_drops_the_tail():
    blocks = pack([[1, 2], [3], [4, 5, 6]], eos_id=0, block_size=4)
    assert blocks.tolist() == [[1, 2, 0, 3], [0, 4, 5, 6]]  # 9 tokens -> 2 blocks, tail "0" dropped


def test_split_is_deterministic_and_disjoint():
    docs = [f"doc {i}" for i in range(100)]
    train, val = split_documents(docs, 0.1, seed=3)
    assert (train, val) == split_documents(docs, 0.1, seed=3)
    assert len(val) == 10 and not set(train) & set(val) and len(train) + len(val) == 100
    assert split_documents(docs, 0.1, seed=4)[1] != val


def _tiny_datamodule(tiny_corpus, cache_dir, block_size: int) -> CorpusDataModule:
    dm = CorpusDataModule(
        tiny_tokenizer(),
        {"format": "jsonl", "files": "corpus/tiny.jsonl"},
        data_dir=str(tiny_corpus),
        cache_dir=str(cache_dir),
        block_size=block_size,
        batch_size=2,
    )
    dm.setup("fit")
    return dm


def test_datamodule_blocks_are_cached_and_identical(tiny_corpus, tmp_path):
    first = _tiny_datamodule(tiny_corpus, tmp_path, 16)
    assert len(list((tmp_path / "tokenized").glob("*.safetensors"))) == 2
    second = _tiny_datamodule(tiny_corpus, tmp_path, 16)
    assert torch.equal(first.train_blocks, second.train_blocks)
    batch = next(iter(first.train_dataloader()))
    assert batch["input_ids"].shape == (2, 16) and torch.equal(batch["labels"], batch["input_ids"])


def test_template_renders_fields(tmp_path):
    (tmp_path / "g.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n')
    docs = read_documents(
        {"format": "jsonl", "files": "g.jsonl", "template": "Q: {question} A: {answer}"}, tmp_path
    )
    assert docs == ["Q: 1+1? A: 2"]


@pytest.mark.parametrize(
    "content,source,message",
    [
        ("", {"format": "jsonl", "files": "c.jsonl"}, "no non-empty documents"),
        ("{not json\n", {"format": "jsonl", "files": "c.jsonl"}, "c.jsonl:1: not valid JSON"),
        ('{"body": "x"}\n', {"format": "jsonl", "files": "c.jsonl"}, "has no field 'text'"),
        ("x", {"format": "jsonl", "files": "missing/*.jsonl"}, "matched no file"),
        ("x", {"format": "parquet", "files": "c.jsonl"}, "data.source.format: unknown 'parquet'"),
    ],
)
def test_bad_corpora_are_one_line_errors(tmp_path, content, source, message):
    (tmp_path / "c.jsonl").write_text(content)
    with pytest.raises(DistillabError, match=message):
        read_documents(source, tmp_path)


def test_text_files_read_with_universal_newlines_so_line_ends_do_not_change_the_text(tmp_path):
    """The offline WikiText-2 copy has CRLF line ends; a model scored on it must see the same text
    (and tokens) as on the LF original."""
    (tmp_path / "crlf.txt").write_bytes(b" = Title = \r\n\r\n Body line .\r\n")
    (tmp_path / "lf.txt").write_bytes(b" = Title = \n\n Body line .\n")
    (tmp_path / "cr.txt").write_bytes(b" = Title = \r\r Body line .\r")
    read = {
        name: read_documents({"format": "text", "files": f"{name}.txt"}, tmp_path)
        for name in ("crlf", "lf", "cr")
    }
    assert read["crlf"] == read["lf"] == read["cr"] == [" = Title = \n\n Body line .\n"]


def test_an_evaluation_is_cached_under_the_text_its_perplexity_was_computed_on(tmp_path):
    from distillab.evaluation.suite import perplexity_text_digests

    eval_cfg = {"perplexity": {"wiki": {"source": {"format": "text", "files": "wiki.txt"}}}}
    (tmp_path / "wiki.txt").write_text("one text\n")
    before = perplexity_text_digests(eval_cfg, str(tmp_path))
    (tmp_path / "wiki.txt").write_bytes(b"one text\r\n")  # the same text: the same key
    assert perplexity_text_digests(eval_cfg, str(tmp_path)) == before
    (tmp_path / "wiki.txt").write_text("another text\n")
    assert perplexity_text_digests(eval_cfg, str(tmp_path)) != before


def test_ddp_ranks_read_disjoint_shards_of_the_same_stream(tiny_corpus, tmp_path):
    """Under DDP each rank's training loader (the trainer's rank and world size, as Lightning gives
    them) reads its own blocks: no block twice within an epoch, the same number of steps per rank,
    together every block but the tail that does not divide evenly; again in the next epoch."""
    from types import SimpleNamespace

    dm = _tiny_datamodule(tiny_corpus, tmp_path, 8)
    total = len(dm.train_blocks)
    assert total >= 6, "the test needs a few blocks per rank"
    dm.train_blocks = torch.arange(total)[:, None].repeat(1, 8)  # block i is all i: which block was read
    for epoch in (0, 1):
        read = []
        for rank in (0, 1, 2):
            dm.trainer = SimpleNamespace(global_rank=rank, world_size=3)
            loader = dm.train_dataloader()
            loader.epoch_sampler.set_epoch(epoch)
            read.append([int(b[0]) for batch in loader for b in batch["input_ids"]])
        # each rank: every 3rd index of one permutation (total // 3), in whole batches of 2
        assert [len(r) for r in read] == [total // 3 // 2 * 2] * 3
        flat = [i for r in read for i in r]
        assert len(flat) == len(set(flat)), f"epoch {epoch}: a block read by two ranks"
    assert read[0] != sorted(read[0]), "shuffled, not read in order"
