"""One loader: any :class:`ModelSpec` (hub id, local folder, GGUF file, ``tiny:<arch>``) ->
``(model, tokenizer)``."""

from __future__ import annotations

import json
import logging
import struct
import zipfile
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from distillab.config import to_plain
from distillab.errors import DistillabError
from distillab.models.spec import ModelSpec
from distillab.models.tiny import build_tiny

log = logging.getLogger(__name__)


def load_model(spec: ModelSpec, key: str = "model") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Instantiate the model and tokenizer a spec describes, in eval mode.

    GGUF files are de-quantized by transformers (needs the ``gguf`` package); the resulting
    ``quantization_config`` is dropped so the model saves as an ordinary HF folder.
    """
    if spec.name_or_path.startswith("tiny:"):
        try:
            return build_tiny(spec.name_or_path.split(":", 1)[1], seed=spec.seed, dtype=spec.torch_dtype)
        except DistillabError as err:  # name the key this spec came from
            raise DistillabError(str(err).replace("model.name_or_path", f"{key}.name_or_path", 1)) from None
    _check_local_source(spec, key)
    kwargs = dict(trust_remote_code=spec.trust_remote_code)
    if spec.gguf_file:
        kwargs["gguf_file"] = spec.gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.name_or_path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            spec.name_or_path,
            dtype=spec.torch_dtype,
            attn_implementation=spec.attn_implementation,
            # Safe by default: refuse pickled .bin weights unless the folder only has those.
            use_safetensors=None if spec.gguf_file else _has_safetensors(spec.name_or_path),
            **kwargs,
        )
    except OSError as err:
        first_line = str(err).strip().splitlines()[0]
        raise DistillabError(
            f"{key}.name_or_path: cannot load {spec.name_or_path!r} ({first_line}); valid: a local HF "
            "folder, a folder + gguf_file, tiny:llama / tiny:qwen2, or a hub id when online"
        ) from None
    if spec.gguf_file and hasattr(model.config, "quantization_config"):
        # The weights are already de-quantized to spec.dtype: forget the GGUF "quantization" so the
        # model saves (and reloads) as an ordinary HF folder.
        del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
    if spec.gguf_file:
        restore_teacher_layers(model, Path(spec.name_or_path) / spec.gguf_file)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def load_from_config(cfg, key: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model spec at ``cfg[key]`` (``model`` or ``teacher``) loaded; errors name that key."""
    return load_model(ModelSpec.from_config(to_plain(cfg[key]), key=key), key=key)


def load_teacher(cfg, model: PreTrainedModel, tokenizer) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The run's reference: ``teacher`` when the config names one, else the input ``model`` itself
    (every app reads its input from ``model``; ``model@teacher: null`` means "against itself")."""
    if cfg.get("teacher"):
        return load_from_config(cfg, "teacher")
    return model, tokenizer


def _has_safetensors(name_or_path: str) -> bool | None:
    path = Path(name_or_path)
    if not path.is_dir():
        return None  # hub id: let transformers pick (it prefers safetensors)
    return any(path.glob("*.safetensors")) or None


def _check_local_source(spec: ModelSpec, key: str) -> None:
    """Fail early, in one line, for paths that look local but are not there."""
    path = Path(spec.name_or_path).expanduser()
    looks_local = spec.name_or_path.startswith((".", "/", "~")) or path.exists()
    if looks_local and not path.exists():
        hint = " (run `make models` to create the SmolLM2 folder)" if "SmolLM2" in spec.name_or_path else ""
        raise DistillabError(f"{key}.name_or_path: folder {spec.name_or_path!r} does not exist{hint}")
    if spec.gguf_file and looks_local and not (path / spec.gguf_file).is_file():
        raise DistillabError(f"{key}.gguf_file: {spec.gguf_file!r} not found in {spec.name_or_path!r}")
    if looks_local and not spec.gguf_file and not (path / "config.json").is_file():
        raise DistillabError(
            f"{key}.name_or_path: {spec.name_or_path!r} has no config.json; give an HF model folder "
            "or set gguf_file"
        )
    if looks_local and not spec.gguf_file:
        _check_folder_parts(path, spec.name_or_path, key)
    if spec.gguf_file and looks_local:
        check_gguf_file(path / spec.gguf_file, f"{key}.gguf_file")


WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def _check_folder_parts(path: Path, name: str, key: str) -> None:
    """An HF folder needs weights and a tokenizer besides config.json (else transformers fails late
    with a message about sentencepiece or a missing file)."""
    if not any(any(path.glob(pattern)) for pattern in WEIGHT_FILES):
        raise DistillabError(
            f"{key}.name_or_path: {name!r} has config.json but no weights; expected model.safetensors "
            "(or pytorch_model.bin, or a sharded index)"
        )
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise DistillabError(
            f"{key}.name_or_path: {name!r} has no tokenizer; expected tokenizer.json (or tokenizer.model, "
            "or vocab.json + merges.txt)"
        )
    for weights in sorted(path.glob("*.safetensors")):
        check_safetensors_file(weights, f"{key}.name_or_path")
    for weights in sorted(path.glob("pytorch_model*.bin")):
        if not zipfile.is_zipfile(weights):  # torch.save writes a zip: a cut-short one lost its end
            raise DistillabError(
                f"{key}.name_or_path: {weights} is not a complete weight file (no zip directory at its end); "
                "export or download the model again"
            )


def check_safetensors_file(path: Path, key: str) -> None:
    """A safetensors file is an 8-byte header length, a JSON header, then the tensors' bytes: it is
    complete when its size is exactly what the header promises (a copy cut short is not; transformers
    would fail with "incomplete metadata" deep in loading)."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            header_len = struct.unpack("<Q", fh.read(8))[0]
            if header_len > size:
                raise ValueError(f"a header of {header_len} bytes in a file of {size}")
            header = json.loads(fh.read(header_len))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        if size != 8 + header_len + end:
            raise ValueError(f"{size} bytes, the header promises {8 + header_len + end}")
    except (struct.error, ValueError, KeyError, TypeError) as err:
        raise DistillabError(
            f"{key}: {path} is not a complete safetensors file ({err}); export or download the model again"
        ) from None


def check_gguf_file(path: Path, key: str) -> None:
    """A GGUF file must start with its magic and parse to the end (a truncated download does not)."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise DistillabError(f"{key}: {path} is not a GGUF file (it starts with {magic!r}, not b'GGUF')")
    import gguf

    try:
        gguf.GGUFReader(path)
    except Exception as err:  # struct.error, ValueError, ...: the file ends before its tensors do
        raise DistillabError(
            f"{key}: {path} is not a complete GGUF file ({type(err).__name__}: {str(err)[:80]}); "
            "download or export it again"
        ) from None


def restore_teacher_layers(model, gguf_path: Path) -> None:
    """A cut model's original-layer record survives a GGUF round trip (distillab writes it as
    ``distillab.teacher_layers``; transformers' GGUF loader does not know the key)."""
    import gguf

    from distillab.models.surgery import TEACHER_LAYERS_GGUF_KEY, TEACHER_LAYERS_KEY

    if not gguf_path.is_file():
        return
    field = gguf.GGUFReader(gguf_path).get_field(TEACHER_LAYERS_GGUF_KEY)
    if field is not None:
        setattr(model.config, TEACHER_LAYERS_KEY, [int(field.parts[i][0]) for i in field.data])
