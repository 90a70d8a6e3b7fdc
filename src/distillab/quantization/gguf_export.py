"""Write any Llama- or Qwen2-family HF model the project produces as a GGUF file.

The ``gguf`` package (llama.cpp's own Python writer) does the container and the block quantizers
it implements (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1). K-quants such as Q4_K_M have no Python
quantizer; :mod:`distillab.quantization.llama_cpp` re-quantizes an f16 export with llama.cpp.

Only what llama.cpp's converter does for these two architectures is written by hand: the tensor
names (from ``gguf``'s name map), the hyper-parameters, the byte-level BPE tokenizer, and the
query/key row order for Llama (llama.cpp applies rotary embeddings to interleaved pairs, HF to the
two halves of each head; transformers' GGUF loader undoes the same permutation on load).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import gguf
import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distillab.errors import DistillabError
from distillab.files import atomic_path
from distillab.models.surgery import TEACHER_LAYERS_GGUF_KEY, TEACHER_LAYERS_KEY, attention_head_dim

log = logging.getLogger(__name__)

ARCHITECTURES = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2}

# Types the gguf package can quantize itself, with the file-type tag llama.cpp expects.
PYTHON_TYPES: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType]] = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "q5_1": (gguf.GGMLQuantizationType.Q5_1, gguf.LlamaFileType.MOSTLY_Q5_1),
    "q5_0": (gguf.GGMLQuantizationType.Q5_0, gguf.LlamaFileType.MOSTLY_Q5_0),
    "q4_1": (gguf.GGMLQuantizationType.Q4_1, gguf.LlamaFileType.MOSTLY_Q4_1),
    "q4_0": (gguf.GGMLQuantizationType.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
}

TOKEN_NORMAL, TOKEN_CONTROL = 1, 3  # gguf.TokenType values


def check_architecture(model: PreTrainedModel) -> gguf.MODEL_ARCH:
    model_type = model.config.model_type
    if model_type not in ARCHITECTURES:
        raise DistillabError(
            f"quantize: GGUF export supports model types {', '.join(ARCHITECTURES)}; got {model_type!r}"
        )
    if model_type == "llama" and (model.config.attention_bias or getattr(model.config, "mlp_bias", False)):
        # transformers' GGUF loader builds Llama without biases and drops them, so the quality of the
        # file could not be measured here (and the rotary permutation would have to cover q/k biases)
        raise DistillabError(
            "quantize: GGUF export of a Llama with attention_bias/mlp_bias is not supported "
            "(transformers' GGUF loader drops the biases); quantize=torchao works"
        )
    c = model.config
    head_dim = attention_head_dim(c)
    if model_type == "qwen2" and head_dim * c.num_attention_heads != c.hidden_size:
        # llama.cpp's and transformers' Qwen2 GGUF loaders both derive head_dim = hidden / heads and
        # reject the file (measured: llama.cpp "attn_q.weight has wrong shape"); Llama honours key_length
        raise DistillabError(
            f"quantize: GGUF export of a Qwen2 with fewer attention heads ({c.num_attention_heads} x "
            f"head_dim {head_dim} != hidden_size {c.hidden_size}, a head-pruned model) would not load in "
            "llama.cpp or transformers; quantize=torchao works"
        )
    return ARCHITECTURES[model_type]


def interleave_rotary_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """HF rotate-half row order -> llama.cpp's interleaved pairs, per head (Llama q/k projections)."""
    rows = weight.shape[0]
    return (
        weight.reshape(num_heads, 2, rows // num_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def export_gguf(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    path: str | Path,
    file_type: str = "f16",
    pre_tokenizer: str = "default",
    name: str | None = None,
) -> Path:
    """Write ``model`` + ``tokenizer`` to ``path`` as GGUF; the file appears only when complete."""
    if file_type not in PYTHON_TYPES:
        raise DistillabError(
            f"quantize.gguf_type: {file_type!r} has no Python quantizer; valid: {', '.join(PYTHON_TYPES)} "
            "(K-quants such as q4_k_m go through llama.cpp: install distillab[gguf-runtime])"
        )
    arch = check_architecture(model)
    qtype, ftype = PYTHON_TYPES[file_type]
    path = Path(path)
    with atomic_path(path) as tmp:
        _write_gguf(tmp, model, tokenizer, arch, qtype, ftype, pre_tokenizer, name or path.stem)
    return path


def _write_gguf(tmp: Path, model, tokenizer, arch, qtype, ftype, pre_tokenizer, name: str) -> None:
    """``tokenizer=None`` writes a file without a vocabulary: llama.cpp's quantizer reads it (it needs
    only the hyper-parameters and tensors), its runtime does not (``k_quants.tensor_types``)."""
    writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[arch])
    _add_hyperparameters(writer, model, ftype, name)
    if tokenizer is not None:
        _add_tokenizer(writer, tokenizer, model, pre_tokenizer)
    for _, gguf_name, array in gguf_tensors(model, arch):
        tensor_type = _tensor_type(gguf_name, array, qtype)
        if tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            writer.add_tensor(
                gguf_name, array.astype(np.float16 if tensor_type.name == "F16" else np.float32)
            )
        else:
            writer.add_tensor(gguf_name, gguf.quants.quantize(array, tensor_type), raw_dtype=tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _tensor_type(name: str, array: np.ndarray, qtype: gguf.GGMLQuantizationType) -> gguf.GGMLQuantizationType:
    """Norms and other vectors stay f32 (as llama.cpp does); rows that don't fill whole blocks: f16."""
    if array.ndim == 1:
        return gguf.GGMLQuantizationType.F32
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    if array.shape[-1] % block:
        log.warning("%s: row length %d is not a multiple of %d; stored as f16", name, array.shape[-1], block)
        return gguf.GGMLQuantizationType.F16
    return qtype


def gguf_names(model: PreTrainedModel, arch: gguf.MODEL_ARCH) -> dict[str, str]:
    """``{hf_name: gguf_name}`` of every tensor the file holds (a tied head is not one of them)."""
    config = model.config
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    found = {}
    for hf_name in model.state_dict():
        if (tied and hf_name == "lm_head.weight") or "rotary_emb" in hf_name:
            continue  # llama.cpp reuses token_embd.weight when output.weight is absent
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise DistillabError(f"quantize: no GGUF name for tensor {hf_name!r} ({config.model_type})")
        found[hf_name] = gguf_name
    return found


def gguf_tensors(model: PreTrainedModel, arch: gguf.MODEL_ARCH):
    """``(hf_name, gguf_name, float32 array)`` of every tensor the file holds, in llama.cpp's layout."""
    config, state = model.config, model.state_dict()
    for hf_name, gguf_name in gguf_names(model, arch).items():
        array = state[hf_name].detach().to(torch.float32).cpu().numpy()
        if arch == gguf.MODEL_ARCH.LLAMA and hf_name.endswith("q_proj.weight"):
            array = interleave_rotary_rows(array, config.num_attention_heads)
        elif arch == gguf.MODEL_ARCH.LLAMA and hf_name.endswith("k_proj.weight"):
            array = interleave_rotary_rows(array, config.num_key_value_heads)
        yield hf_name, gguf_name, array


def _add_hyperparameters(writer: gguf.GGUFWriter, model: PreTrainedModel, ftype, name: str) -> None:
    c = model.config
    head_dim = attention_head_dim(c)
    writer.add_name(name)
    writer.add_file_type(ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(_rope_theta(c)))
    writer.add_layer_norm_rms_eps(float(c.rms_norm_eps))
    writer.add_vocab_size(c.vocab_size)
    teacher_layers = getattr(c, TEACHER_LAYERS_KEY, None)
    if teacher_layers is not None:  # so a stage after quantization still maps layers to the teacher's
        writer.add_array(TEACHER_LAYERS_GGUF_KEY, [int(i) for i in teacher_layers])


def _rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    if params.get("rope_type", "default") != "default":
        raise DistillabError(
            f"quantize: rope scaling {params.get('rope_type')!r} is not exported to GGUF (default RoPE only)"
        )
    return params.get("rope_theta") or getattr(config, "rope_theta", 10000.0)


def _add_tokenizer(writer: gguf.GGUFWriter, tokenizer, model: PreTrainedModel, pre_tokenizer: str) -> None:
    """Byte-level BPE (GPT-2 style) tokenizers: vocabulary, merges and special ids from tokenizer.json."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()) if backend is not None else {}
    if spec.get("model", {}).get("type") != "BPE":
        raise DistillabError(
            "quantize: GGUF export needs a byte-level BPE tokenizer (tokenizer.json with a BPE model); "
            f"{type(tokenizer).__name__} is not one"
        )
    vocab: dict[str, int] = dict(spec["model"]["vocab"])
    special = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
    vocab |= special
    size = model.config.vocab_size
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [gguf.TokenType.UNUSED] * size
    for token, index in vocab.items():
        if index < size:
            tokens[index] = token
            types[index] = TOKEN_CONTROL if token in special else TOKEN_NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, adder in (
        ("bos_token_id", writer.add_bos_token_id),
        ("eos_token_id", writer.add_eos_token_id),
        ("pad_token_id", writer.add_pad_token_id),
        ("unk_token_id", writer.add_unk_token_id),
    ):
        index = getattr(tokenizer, key, None)
        if index is not None:
            adder(int(index))
    writer.add_add_bos_token(False)
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str):
        writer.add_chat_template(template)
