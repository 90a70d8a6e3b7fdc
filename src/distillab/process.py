"""Process settings from the top-level config: intra-op threads and the allocator."""

from __future__ import annotations

import ctypes

import torch
from omegaconf import DictConfig

# How CPU memory freed by torch is handled (glibc only; a no-op elsewhere). Each costs something:
#   reuse   - freed memory stays in the process and serves the next tensors of the step. Fastest:
#             no page is handed back, so none is faulted in and zeroed again by the kernel
#             (measured, KD step on SmolLM2: see bench/allocator.py). Resident memory stays at
#             the run's high-water mark.
#   release - blocks of 4 MB or more come from mmap and go back to the OS when freed: the lowest
#             resident memory, at the price of fresh zeroed pages for every vocabulary-sized
#             temporary (about half the CPU time in the kernel on a real KD run).
#   glibc   - glibc's own policy, untouched: its mmap threshold rises after large frees (to 32 MB),
#             so temporaries below that stay resident once freed and larger ones are re-faulted.
ALLOCATORS = ("reuse", "release", "glibc")

# mallopt parameter numbers, from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_RELEASE_THRESHOLD_BYTES = 4 * 2**20
_TRIM_ABOVE_BYTES = 2**31 - 1  # the largest mallopt takes (an int): in effect, never


def set_threads(threads: int | None) -> None:
    """Intra-op threads. On 2 cores, one busy process per core beats oversubscription."""
    if threads:
        torch.set_num_threads(int(threads))


def set_allocator(policy: str) -> None:
    """Apply one of :data:`ALLOCATORS` to this process's glibc malloc (from now on)."""
    if policy not in ALLOCATORS:
        raise ValueError(f"allocator={policy!r}: valid are {', '.join(ALLOCATORS)}")
    if policy == "glibc":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    if policy == "reuse":
        libc.mallopt(_M_MMAP_MAX, 0)  # every block from the heap, where a freed one is reused
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_ABOVE_BYTES)  # and the heap's top is kept
    else:
        libc.mallopt(_M_MMAP_THRESHOLD, _RELEASE_THRESHOLD_BYTES)


def configure_process(cfg: DictConfig) -> None:
    """Thread count and allocator policy from the top-level config (every entry point)."""
    set_threads(cfg.get("threads"))
    set_allocator(cfg.get("allocator", "reuse"))
