"""The precisions a run trains in, by the name the config and every file use."""

from __future__ import annotations

import torch

PRECISIONS = {"float32": torch.float32, "float64": torch.float64}


def dtype_of(precision: object, default: torch.dtype) -> torch.dtype:
    """The dtype a file's recorded `precision` names (`default` where it names none)."""
    return PRECISIONS.get(str(precision), default)
