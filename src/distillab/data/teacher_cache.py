"""Offline teacher cache: the teacher's top-k log-probabilities per token, computed once.

For every packed training block, the teacher's next-token distribution at temperature T is kept as
its k largest log-probabilities, their token ids, and the log of the remaining (tail) mass, so the
cached distribution over k + 1 buckets is a proper distribution. Shards are safetensors files under
``<cache>/teacher_topk/<key>/``, ``key`` a hash of teacher weights, tokenizer, blocks, k and T; a
``manifest.json`` written last marks a finished cache. Output-only objectives (``kd_cached`` + ``ce``)
then train with no teacher in memory.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from distillab.data.packing import tokenizer_fingerprint
from distillab.errors import DistillabError
from distillab.files import digest, json_digest, read_json, write_json_atomic
from distillab.models.fingerprint import model_fingerprint
from distillab.precision import cache_tag, in_run_precision

_LOG_FLOOR = -1.0e4


def topk_with_tail(logits: torch.Tensor, k: int, temperature: float = 1.0):
    """``(B, T, V)`` logits -> top-k log-probs ``(B, T, k)``, ids ``(B, T, k)``, tail log-mass ``(B, T)``."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    values, ids = logp.topk(k, dim=-1)
    tail = torch.log1p(-values.exp().sum(-1).clamp(max=1.0)).clamp_min(_LOG_FLOOR)  # log(1 - Σ top-k)
    return values, ids.to(torch.int32), tail


def cache_key(
    teacher_fingerprint: str, tokenizer_fingerprint: str, blocks: torch.Tensor, k: int, temperature: float
) -> str:
    blocks_hash = digest(blocks.contiguous().numpy().tobytes())
    # the shape too: one token stream cut into blocks of 256 or of 512 has the same bytes, but the
    # teacher's top-k at a position depends on how much of the block precedes it
    shape = list(blocks.shape)
    return json_digest(
        [teacher_fingerprint, tokenizer_fingerprint, blocks_hash, shape, int(k), float(temperature)], 20
    )


@torch.no_grad()
@in_run_precision
def build_topk_cache(
    teacher,
    blocks: torch.Tensor,
    root: Path,
    key: str,
    k: int,
    temperature: float = 1.0,
    batch_size: int = 4,
    shard_blocks: int = 256,
) -> Path:
    """Compute (or reuse) the cache for ``blocks`` ``(N, T)``; returns its directory."""
    if not 1 <= k <= teacher.config.vocab_size:
        raise DistillabError(f"teacher_cache.k: must be in 1..{teacher.config.vocab_size}, got {k}")
    if temperature <= 0:
        raise DistillabError(f"teacher_cache.temperature: must be > 0, got {temperature}")
    out = root / key
    if (out / "manifest.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    teacher.eval()
    device = next(teacher.parameters()).device
    shards = []
    for shard_start in tqdm(range(0, len(blocks), shard_blocks), desc="teacher top-k cache"):
        ids = blocks[shard_start : shard_start + shard_blocks]
        parts = [
            topk_with_tail(teacher(input_ids=ids[i : i + batch_size].to(device)).logits, k, temperature)
            for i in range(0, len(ids), batch_size)
        ]
        tensors = {
            "input_ids": ids.contiguous(),
            "logp": torch.cat([p[0] for p in parts]).cpu(),
            "ids": torch.cat([p[1] for p in parts]).cpu(),
            "tail": torch.cat([p[2] for p in parts]).cpu(),
        }
        name = f"shard-{len(shards):05d}.safetensors"
        save_file(tensors, out / name)
        shards.append({"file": name, "blocks": len(ids)})
    manifest = {"k": k, "temperature": temperature, "shards": shards, "blocks": len(blocks)}
    write_json_atomic(out / "manifest.json", manifest)  # the cache counts as finished only now
    return out


class TopKCacheDataset(Dataset):
    """Rows ``{"input_ids", "teacher_topk_logp", "teacher_topk_ids", "teacher_tail_logp"}`` from a cache."""

    def __init__(self, directory: Path):
        manifest = read_json(directory / "manifest.json", f"delete {directory} to rebuild the teacher cache")
        shards = [load_file(directory / s["file"]) for s in manifest["shards"]]
        self.temperature, self.k = manifest["temperature"], manifest["k"]
        self.tensors = {
            name: torch.cat([s[name] for s in shards]) for name in ("input_ids", "logp", "ids", "tail")
        }

    def __len__(self) -> int:
        return len(self.tensors["input_ids"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        t = self.tensors
        return {
            "input_ids": t["input_ids"][i],
            "teacher_topk_logp": t["logp"][i],
            "teacher_topk_ids": t["ids"][i].long(),
            "teacher_tail_logp": t["tail"][i],
        }


def collate_cached(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    batch = {name: torch.stack([r[name] for r in rows]) for name in rows[0]}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    batch["labels"] = batch["input_ids"].clone()
    return batch


def prepare_teacher_cache(
    teacher,
    tokenizer,
    datamodule,
    cache_dir: Path,
    k: int = 64,
    temperature: float = 1.0,
    batch_size: int = 4,
    shard_blocks: int = 256,
) -> Path:
    """Build (or reuse) the cache for the datamodule's training blocks and switch it to cached batches."""
    teacher_id = model_fingerprint(teacher) + cache_tag(teacher)  # a bf16 teacher's top-k is another cache
    key = cache_key(teacher_id, tokenizer_fingerprint(tokenizer), datamodule.train_blocks, k, temperature)
    directory = build_topk_cache(
        teacher,
        datamodule.train_blocks,
        Path(cache_dir) / "teacher_topk",
        key,
        k,
        temperature,
        batch_size,
        shard_blocks,
    )
    datamodule.use_teacher_cache(directory)
    return directory


def check_cache_config(cache_readers: dict[str, float], cache_cfg: dict) -> dict:
    """Validate ``teacher_cache`` against the terms that read it (``{term name: its temperature}``);
    return the build settings (without ``enabled``)."""
    cache_cfg = dict(cache_cfg)
    enabled = cache_cfg.pop("enabled", False)
    if cache_readers and not enabled:
        raise DistillabError(
            f"teacher_cache.enabled: objective term {', '.join(cache_readers)} needs it set to true"
        )
    for name, temperature in cache_readers.items():
        if temperature != float(cache_cfg.get("temperature", 1.0)):
            raise DistillabError(
                f"objective.terms.{name}.temperature: {temperature} differs from teacher_cache.temperature "
                f"{cache_cfg.get('temperature', 1.0)} (the cache stores distributions at one temperature)"
            )
    return cache_cfg
