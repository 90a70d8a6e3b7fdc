"""Cross-tokenizer alignment: both tokenizers read the same text, positions pair through character offsets.

A student row (token ids of the student's tokenizer, exactly as trained on: packed data, or the
student's own samples on-policy, which need not be the tokenizer's canonical encoding) is turned
into text token by token through the vocabulary's byte table, so every student token's end is a
known character. The teacher's tokenizer encodes that text with character offsets. Student
position ``j`` and teacher position ``k`` are a *pair* when tokens ``j`` and ``k`` end at the same
character ``c`` and both sequences go on after ``c``: each model's next-token distribution there is
a distribution over how the text continues from ``c``, which cross-tokenizer losses compare (ULD,
arXiv 2402.12030; TRL's GOLD aligns the same way and merges the spans between boundaries instead
of skipping them).

Special tokens are not text. A teacher whose tokenizer adds BOS (Gemma) gets BOS in front, paired
with the student's BOS when the student's tokenizer adds one too. Every other special token of the
student (the EOS between packed documents; UNK, chat markers; an id outside its vocabulary) splits
the row into segments and becomes the teacher's EOS, followed by the teacher's BOS when its
tokenizer adds one: the next document then starts for the teacher as every document it was trained
on does (Gemma without BOS reads text far worse: bench/bos_perplexity.py). The student's special
token pairs with the teacher's last token there (BOS, else EOS): both then predict how the next
document starts.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from distillab.data.packing import bos_token_id
from distillab.errors import DistillabError


@dataclass
class AlignedBatch:
    """The teacher's encoding of a student batch. ``pairs`` ``(N, 3)`` rows ``[b, j, k]``: student
    position j and teacher position k of row b predict the same next text. Padding: mask 0."""

    teacher_ids: torch.Tensor  # (B, T_t)
    teacher_mask: torch.Tensor  # (B, T_t)
    pairs: torch.Tensor  # (N, 3) long


def token_ends(offsets: list[tuple[int, int]]) -> list[int | None]:
    """Per token, the character at which the text may be cut after it; None inside a character.

    Byte-level tokenizers split a multi-byte character over several tokens that share its offsets:
    only the last of them ends a cut (ends must strictly increase).
    """
    ends: list[int | None] = []
    for i, (_, end) in enumerate(offsets):
        last = i + 1 == len(offsets) or offsets[i + 1][1] > end
        ends.append(end if last else None)
    return ends


def aligned_positions(
    student_ends: list[int | None], teacher_ends: list[int | None]
) -> list[tuple[int, int]]:
    """``(j, k)`` where student token j and teacher token k end at the same character and neither
    is the last token (so both predict a next token)."""
    teacher_at = {end: k for k, end in enumerate(teacher_ends[:-1]) if end is not None}
    return [
        (j, teacher_at[end])
        for j, end in enumerate(student_ends[:-1])
        if end is not None and end in teacher_at
    ]


def decode_with_ends(pieces: list[bytes]) -> tuple[str, list[int | None]]:
    """Text of a token sequence given each token's bytes, and the character each token ends at
    (None inside a multi-byte character). Bytes that are not UTF-8 become U+FFFD, as
    ``tokenizer.decode`` shows them."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    parts: list[str] = []
    ends: list[int | None] = []
    length = 0
    for piece in pieces:
        out = decoder.decode(piece)
        parts.append(out)
        length += len(out)
        ends.append(None if decoder.getstate()[0] else length)
    tail = decoder.decode(b"", final=True)  # an unfinished character at the very end
    if tail:
        parts.append(tail)
        ends[-1] = length + len(tail)
    return "".join(parts), ends


class TokenAligner:
    """Encodes student batches for a teacher with another tokenizer (see the module docstring)."""

    def __init__(self, student_tok: PreTrainedTokenizerBase, teacher_tok: PreTrainedTokenizerBase):
        self.teacher_tok = teacher_tok
        self.same_tokenizer = student_tok.get_vocab() == teacher_tok.get_vocab()
        self.student_bytes = token_bytes(student_tok)
        self.student_bos = bos_token_id(student_tok)  # only a BOS the tokenizer itself adds
        self.teacher_bos = bos_token_id(teacher_tok)
        self.teacher_eos = teacher_tok.eos_token_id
        self.teacher_pad = (
            teacher_tok.pad_token_id if teacher_tok.pad_token_id is not None else self.teacher_eos
        )

    def encode_row(self, ids: list[int]) -> tuple[list[int], list[tuple[int, int]]]:
        """One student row -> (teacher ids, pairs ``(j, k)``). Characters are counted over the
        concatenated segments; a special token occupies one virtual character."""
        teacher_ids: list[int] = [] if self.teacher_bos is None else [self.teacher_bos]
        teacher_ends: list[int | None] = [] if self.teacher_bos is None else [0]
        student_ends: list[int | None] = []
        position = 0  # characters so far
        if ids and ids[0] == self.student_bos:  # the student's BOS is the teacher's (both end at 0)
            student_ends.append(0)
            ids = ids[1:]

        def add_text(segment: list[int]) -> None:
            nonlocal position
            text, ends = decode_with_ends([self.student_bytes[t] for t in segment])
            student_ends.extend(None if e is None else position + e for e in ends)
            enc = self.teacher_tok(text, add_special_tokens=False, return_offsets_mapping=True)
            teacher_ids.extend(enc["input_ids"])
            teacher_ends.extend(
                None if e is None else position + e for e in token_ends(enc["offset_mapping"])
            )
            position += len(text)

        segment: list[int] = []
        for token in ids:
            if token in self.student_bytes:  # text; special tokens and unknown ids have no bytes
                segment.append(token)
                continue
            if segment:
                add_text(segment)
                segment = []
            position += 1
            student_ends.append(position)
            teacher_ids.append(self.teacher_eos)
            if self.teacher_bos is None:
                teacher_ends.append(position)
            else:  # EOS is no cut of its own: the BOS after it ends at the same virtual character
                teacher_ends.append(None)
                teacher_ids.append(self.teacher_bos)
                teacher_ends.append(position)
        if segment:
            add_text(segment)
        return teacher_ids, aligned_positions(student_ends, teacher_ends)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> AlignedBatch:
        """Rows are read up to their attention mask, which must be right padding (positions kept)."""
        lengths = attention_mask.sum(-1)
        for mask, length in zip(attention_mask, lengths, strict=True):
            if not bool(mask[: int(length)].all()):
                raise DistillabError(
                    "data: cross-tokenizer batches need right padding (attention mask ones, then zeros); "
                    "left or interior padding would pair the wrong positions"
                )
        rows = [self.encode_row(r[: int(n)].tolist()) for r, n in zip(input_ids, lengths, strict=True)]
        teacher_len = max(len(t) for t, _ in rows)
        teacher_ids = torch.full((len(rows), teacher_len), self.teacher_pad, dtype=torch.long)
        teacher_mask = torch.zeros((len(rows), teacher_len), dtype=torch.long)
        pairs = []
        for b, (row_ids, row_pairs) in enumerate(rows):
            teacher_ids[b, : len(row_ids)] = torch.tensor(row_ids, dtype=torch.long)
            teacher_mask[b, : len(row_ids)] = 1
            pairs += [(b, j, k) for j, k in row_pairs]
        device = input_ids.device
        return AlignedBatch(
            teacher_ids.to(device),
            teacher_mask.to(device),
            torch.tensor(pairs, dtype=torch.long, device=device).reshape(-1, 3),
        )


def _byte_decoder() -> dict[str, int]:
    """Byte-level BPE's printable stand-ins (GPT-2's table: ``Ġ`` is a space) back to bytes."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _is_byte_piece(piece: str) -> bool:
    """SentencePiece's byte fallback: ``<0x0A>`` is the raw byte 0x0A."""
    return len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">")


def token_bytes(tokenizer: PreTrainedTokenizerBase) -> dict[int, bytes]:
    """Token id -> the bytes of text it stands for (special tokens left out).

    Byte-level BPE (GPT-2, SmolLM2, Llama 3, Qwen) maps tokens back through the byte table;
    SentencePiece-style vocabularies (Gemma, Llama 2) write a space as ``▁`` and a raw byte as
    ``<0x0A>``.
    """
    backend = tokenizer.backend_tokenizer
    byte_level = "ByteLevel" in str(backend.pre_tokenizer) + str(backend.decoder)
    table = _byte_decoder() if byte_level else None
    specials = set(tokenizer.all_special_ids)
    out = {}
    for piece, token_id in tokenizer.get_vocab().items():
        if token_id in specials:
            continue
        if table is not None and all(ch in table for ch in piece):
            out[token_id] = bytes(table[ch] for ch in piece)
        elif table is None and _is_byte_piece(piece):
            out[token_id] = bytes([int(piece[3:5], 16)])
        else:
            out[token_id] = piece.replace("▁", " ").encode("utf-8")
    return out


def token_surfaces(tokenizer: PreTrainedTokenizerBase) -> dict[int, str]:
    """Token id -> its text, for every token that is whole text on its own (not a raw byte, not a
    piece of a multi-byte character, not special)."""
    surfaces = {}
    for token_id, raw in token_bytes(tokenizer).items():
        if _is_byte_piece(tokenizer.convert_ids_to_tokens(token_id)):
            continue
        try:
            surfaces[token_id] = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return surfaces


def shared_tokens(student_tok, teacher_tok) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids of the tokens that stand for the same text in both vocabularies, as two aligned index
    tensors ``(student_ids, teacher_ids)`` (one id per text on each side: the lowest)."""

    def by_text(tok) -> dict[str, int]:
        out: dict[str, int] = {}
        for token_id, text in sorted(token_surfaces(tok).items()):
            out.setdefault(text, token_id)
        return out

    student, teacher = by_text(student_tok), by_text(teacher_tok)
    common = sorted(set(student) & set(teacher))
    return (
        torch.tensor([student[t] for t in common], dtype=torch.long),
        torch.tensor([teacher[t] for t in common], dtype=torch.long),
    )
