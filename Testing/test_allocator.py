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
block = np.ones(64 << 20, dtype=np.uint8)
mapped = libc.mallinfo2().hblkhd >= 64 << 20
del block
print(kept, mapped, libc.mallinfo2().fordblks >= 64 << 20)
"""
"""Prints whether the setting took, whether a 64 MiB block was mapped on its own (given back on free), and
whether the freed block stayed in the heap."""


@pytest.mark.parametrize("mode, expected", [("plain", "False True False"), ("kept", "True False True")])
def test_large_blocks_are_kept_only_where_asked(mode, expected):
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    assert done.stdout.split() == expected.split()


def test_the_cli_process_asks_for_it():
    """`python -m speckle2self` (the CLI, the Slicer module's process) sets it before any command runs."""
    code = ("import sys; import speckle2self.cli as cli; "
            "calls = []; cli.keep_freed_blocks = lambda: calls.append(1); cli.main(['info']); print(len(calls))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "1"
