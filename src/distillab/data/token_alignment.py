"""Cross-tokenizer alignment: both tokenizers read the same text, positions pair through character offsets.

A student block (token ids of the student's tokenizer) is decoded to text, and both tokenizers
encode that text with character offsets. Student position ``j`` and teacher position ``k`` are a
*pair* when token ``j`` and token ``k`` end at the same character ``c`` and both sequences go on
after ``c``: each model's next-token distribution there is a distribution over how the text
continues from ``c`` — the quantity cross-tokenizer losses compare (ULD, arXiv 2402.12030; TRL's
GOLD aligns the same way and merges spans between boundaries instead of skipping them).

Special tokens (the student's EOS between packed documents) are not text: they split a block into
segments, are kept in the student's sequence and become the teacher's EOS, and pair with it. A
teacher whose tokenizer adds BOS (Gemma) gets BOS in front. Re-encoding decoded text gives the
student's original ids back almost always (byte-level BPE; :func:`roundtrip_rate` measures it); the
student trains on the re-encoded ids so that its positions and offsets agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from distillab.data.packing import bos_token_id


@dataclass
class AlignedBatch:
    """One batch in both tokenizations. ``pairs`` ``(N, 3)`` rows ``[b, j, k]``: student position j
    and teacher position k of row b predict the same next text. Padding: ``*_mask`` is 0."""

    student_ids: torch.Tensor  # (B, T)
    student_mask: torch.Tensor  # (B, T)
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


class TokenAligner:
    """Re-tokenizes student batches for a teacher with another tokenizer (see the module docstring)."""

    def __init__(self, student_tok: PreTrainedTokenizerBase, teacher_tok: PreTrainedTokenizerBase):
        self.student_tok, self.teacher_tok = student_tok, teacher_tok
        self.same_tokenizer = student_tok.get_vocab() == teacher_tok.get_vocab()
        self.student_specials = set(student_tok.all_special_ids)
        self.teacher_bos = bos_token_id(teacher_tok)
        self.teacher_eos = teacher_tok.eos_token_id
        self.teacher_pad = (
            teacher_tok.pad_token_id if teacher_tok.pad_token_id is not None else self.teacher_eos
        )

    def encode_row(self, ids: list[int]) -> tuple[list[int], list[int], list[tuple[int, int]]]:
        """One student row -> (student ids, teacher ids, pairs). Characters are counted over the
        concatenated segments; a special token occupies one virtual character."""
        student_ids: list[int] = []
        teacher_ids: list[int] = [] if self.teacher_bos is None else [self.teacher_bos]
        student_ends: list[int | None] = []
        teacher_ends: list[int | None] = [] if self.teacher_bos is None else [0]
        position = 0  # characters so far

        def add_text(segment: list[int]) -> None:
            nonlocal position
            text = self.student_tok.decode(segment, clean_up_tokenization_spaces=False)
            for tok, out, ends in (
                (self.student_tok, student_ids, student_ends),
                (self.teacher_tok, teacher_ids, teacher_ends),
            ):
                enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
                out.extend(enc["input_ids"])
                ends.extend(None if e is None else position + e for e in token_ends(enc["offset_mapping"]))
            position += len(text)

        segment: list[int] = []
        for token in ids:
            if token not in self.student_specials:
                segment.append(token)
                continue
            if segment:
                add_text(segment)
                segment = []
            position += 1
            student_ids.append(token)
            teacher_ids.append(self.teacher_eos)
            student_ends.append(position)
            teacher_ends.append(position)
        if segment:
            add_text(segment)
        return student_ids, teacher_ids, aligned_positions(student_ends, teacher_ends)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> AlignedBatch:
        """Student length stays ``T`` (re-encoded rows are cut or padded to it); pairs past the cut go."""
        batch, length = input_ids.shape
        rows = [self.encode_row(r[m.bool()].tolist()) for r, m in zip(input_ids, attention_mask, strict=True)]
        teacher_len = max(len(t) for _, t, _ in rows)
        student_out = torch.full((batch, length), self.student_tok.pad_token_id or 0, dtype=torch.long)
        student_mask = torch.zeros((batch, length), dtype=torch.long)
        teacher_out = torch.full((batch, teacher_len), self.teacher_pad, dtype=torch.long)
        teacher_mask = torch.zeros((batch, teacher_len), dtype=torch.long)
        pairs = []
        for b, (s_ids, t_ids, row_pairs) in enumerate(rows):
            s_ids = s_ids[:length]
            student_out[b, : len(s_ids)] = torch.tensor(s_ids, dtype=torch.long)
            student_mask[b, : len(s_ids)] = 1
            teacher_out[b, : len(t_ids)] = torch.tensor(t_ids, dtype=torch.long)
            teacher_mask[b, : len(t_ids)] = 1
            pairs += [(b, j, k) for j, k in row_pairs if j + 1 < len(s_ids)]
        device = input_ids.device
        return AlignedBatch(
            student_out.to(device),
            student_mask.to(device),
            teacher_out.to(device),
            teacher_mask.to(device),
            torch.tensor(pairs, dtype=torch.long, device=device).reshape(-1, 3),
        )


def roundtrip_rate(student_tok: PreTrainedTokenizerBase, rows: torch.Tensor) -> float:
    """Share of rows whose decode -> encode gives the same ids (how often re-encoding changes data)."""
    aligner = TokenAligner(student_tok, student_tok)
    same = [aligner.encode_row(r.tolist())[0] == r.tolist() for r in rows]
    return sum(same) / max(len(same), 1)


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


def token_surfaces(tokenizer: PreTrainedTokenizerBase) -> dict[int, str]:
    """Token id -> the text the token stands for, for every token that is whole text on its own.

    Byte-level BPE (GPT-2, SmolLM2, Llama 3, Qwen) maps tokens back through the byte table;
    SentencePiece-style vocabularies (Gemma, Llama 2) write a space as ``▁``. Left out: special
    tokens, byte-fallback tokens (``<0x0A>``) and pieces of a multi-byte character.
    """
    backend = tokenizer.backend_tokenizer
    byte_level = "ByteLevel" in str(backend.pre_tokenizer) + str(backend.decoder)
    table = _byte_decoder() if byte_level else None
    specials = set(tokenizer.all_special_ids)
    surfaces = {}
    for piece, token_id in tokenizer.get_vocab().items():
        if token_id in specials or (piece.startswith("<0x") and piece.endswith(">")):
            continue
        if table is not None:
            if any(ch not in table for ch in piece):
                continue
            try:
                surfaces[token_id] = bytes(table[ch] for ch in piece).decode("utf-8")
            except UnicodeDecodeError:
                continue
        else:
            surfaces[token_id] = piece.replace("▁", " ")
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
