"""Reading what an offline W&B run wrote: the records of its ``.wandb`` transaction log."""

from __future__ import annotations

import struct
import time
from pathlib import Path

from google.protobuf.message import DecodeError


def wandb_records(path: Path):
    """The records of an offline run's ``.wandb`` file (LevelDB log blocks after W&B's 7-byte
    header); wandb >= 0.30 ships no Python reader for it."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    if len(data) < 7:  # not even the header written yet
        return
    assert data[:4] == b":W&B"
    pos, payload = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7 or data[pos : pos + 7] == bytes(7):  # a block's zero trailer
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        payload = chunk if kind in (1, 2) else payload + chunk  # full/first start, middle/last extend
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            yield record


def finished_records(path: Path, timeout: float = 120.0) -> list:
    """The records once the run's ``exit`` record is on disk. ``wandb.finish()`` can return before
    W&B's service has flushed the file (it buffers a whole 32 KiB block; CI on a loaded 2-core
    machine once read only the header), so wait for the last record instead of trusting the return."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            records = list(wandb_records(path))
        except DecodeError:  # a record cut at the end of a write still in progress
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)
