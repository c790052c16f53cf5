"""Arithmetic precision of the network: int8 (OpenVINO) or bf16 autocast where they are fast, else fp32.

On a CPU with AVX512-BF16 or AMX, bf16 convolutions run about twice as fast as fp32; on a CPU without them
bf16 is many times slower, so 'auto' only picks it when the instructions are there. Despeckling on the
CPU goes further: 'auto' runs the int8 network of `int8` when OpenVINO and NNCF are installed (faster than
fp32 on AVX2 and AVX-512 CPUs alike, docs/performance.md). 'fp32' is the reference path.
"""
from __future__ import annotations

import contextlib
import functools
import sys

import torch

from .errors import UserError

PRECISIONS = ("auto", "int8", "bf16", "fp32")


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 convolutions beat fp32 on `device` (CPU: AVX512-BF16 or AMX, and torch's kernels not
    capped below AVX-512 by ATEN_CPU_CAPABILITY; CUDA: Ampere or later)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


@functools.lru_cache(maxsize=1)
def _say_int8_missing(reason: str) -> None:
    print(f"speckle2self: {reason}, so despeckling runs on torch (pip install openvino nncf for the faster "
          "int8 path)", file=sys.stderr)


def resolve_precision(precision: str, device: torch.device, despeckling: bool = False,
                      int8_pays: bool = False) -> str:
    """'auto' becomes 'bf16' where that is fast on `device`, else 'fp32'; when `despeckling` and `int8_pays`
    (the int8 model is ready, or the job earns its preparation back) it becomes 'int8' on the CPU where
    OpenVINO and NNCF are installed, saying once when they are not."""
    if precision not in PRECISIONS:
        raise UserError(f"Unknown precision {precision!r}", "use auto, int8, bf16 or fp32")
    if precision == "int8" or (precision == "auto" and despeckling and int8_pays and device.type == "cpu"):
        from .int8 import missing

        reason = missing()
        if precision == "int8":
            if not despeckling:
                raise UserError("int8 is a despeckling precision; training runs in bf16 or fp32",
                                "use --precision auto for fine-tuning")
            if device.type != "cpu":
                raise UserError("The int8 path runs on the CPU", "use --device cpu, or --precision auto on a GPU")
            if reason:
                raise UserError(f"The int8 path needs OpenVINO and NNCF, but {reason}",
                                "pip install openvino nncf, or use --precision auto")
            return "int8"
        if reason is None:
            return "int8"
        _say_int8_missing(reason)
    if precision == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context that runs the network at a resolved `precision` on `device`."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
