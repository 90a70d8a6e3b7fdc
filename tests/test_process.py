"""The allocator policy really changes glibc's malloc: checked through mallinfo2 in a fresh process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from distillab.process import set_allocator

# In a child so this test's policy does not leak into the rest of the session. mallinfo2().hblkhd
# is the number of bytes glibc holds in mmapped blocks: a 64 MB tensor lands there unless the
# policy serves every block from the heap.
PROBE = """
import ctypes, sys, torch
from distillab.process import set_allocator
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
set_allocator(sys.argv[1])
t = torch.empty(16 * 2**20, dtype=torch.float32)
print(libc.mallinfo2().hblkhd >= 64 * 2**20)
"""


def _glibc_with_mallinfo2() -> bool:
    import ctypes

    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2)")
@pytest.mark.parametrize("policy, mmapped", [("reuse", "False"), ("release", "True"), ("glibc", "True")])
def test_allocator_policy_decides_where_a_big_tensor_lives(policy, mmapped):
    out = subprocess.run([sys.executable, "-c", PROBE, policy], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == mmapped


def test_unknown_policy_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="allocator='tcmalloc': valid are reuse, release, glibc"):
        set_allocator("tcmalloc")
