"""What a run ran on: the facts that decide its last bits (``results.h5``'s ``machine``).

Seeded runs reproduce on one machine. On another CPU, MKL may take another instruction path
(AVX2, AVX-512, AMX) and round differently; a run that spends its step budget on a stiff member
ends elsewhere (docs/e2e/probes/allen_cahn_isa.json). Recording the CPU model, torch's SIMD
level and ``MKL_ENABLE_INSTRUCTIONS`` with every run says why two machines disagree.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (None off Linux)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), None)


def machine_info() -> dict[str, Any]:
    """Platform, CPU, SIMD level, MKL's instruction cap, torch, threads and GPU of this process."""
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_instructions": os.environ.get("MKL_ENABLE_INSTRUCTIONS"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
