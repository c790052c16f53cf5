"""speckle2self's processes keep large freed blocks in the heap (glibc's mallopt), plain processes do not."""
from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys
import numpy as np
from speckle2self.allocator import keep_freed_blocks

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
kept = keep_freed_blocks() if sys.argv[1] == "kept" else False
block = np.ones(16 << 20, dtype=np.uint8)
mapped = libc.mallinfo2().hblkhd >= 16 << 20
del block
stayed = libc.mallinfo2().fordblks >= 16 << 20
cine = np.ones(128 << 20, dtype=np.uint8)
print(kept, mapped, stayed, libc.mallinfo2().hblkhd >= 128 << 20)
"""
"""Prints whether the setting took, whether a 16 MiB block (a network buffer) was mapped on its own (given
back on free), whether it stayed in the heap once freed, and whether a 128 MiB block (a cine) was mapped."""


@pytest.mark.parametrize("mode, expected", [("plain", "False True False True"), ("kept", "True False True True")])
def test_large_blocks_are_kept_only_where_asked(mode, expected):
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    assert done.stdout.split() == expected.split()


def test_the_cli_process_asks_for_it():
    """`python -m speckle2self` (the CLI, the Slicer module's process) sets it before any command runs."""
    code = ("import sys; import speckle2self.cli as cli; "
            "calls = []; cli.keep_freed_blocks = lambda: calls.append(1); cli.main(['info']); print(len(calls))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "1"
