"""Arithmetic precision of the network: bf16 autocast where the hardware runs it fast, else fp32.

On a CPU with AVX512-BF16 or AMX, bf16 convolutions run about twice as fast as fp32 (measured in
docs/performance.md); on a CPU without them bf16 is many times slower, so 'auto' only picks it when
the instructions are there. 'fp32' is the reference path.
"""
from __future__ import annotations

import contextlib

import torch

from .errors import UserError

PRECISIONS = ("auto", "bf16", "fp32")


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 convolutions beat fp32 on `device` (CPU: AVX512-BF16 or AMX; CUDA: Ampere or later)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' becomes 'bf16' where that is fast on `device`, else 'fp32'; others are checked."""
    if precision not in PRECISIONS:
        raise UserError(f"Unknown precision {precision!r}", "use auto, bf16 or fp32")
    if precision == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context that runs the network at a resolved `precision` on `device`."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
