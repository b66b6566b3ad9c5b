"""The ``axes`` attribute of a results.h5 ``fields`` group: the coordinate names, in the
order of the grid's axes (read by results.h5's reader, its XDMF sidecar and reference files)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np


def read_axes(value: Any) -> list[str]:
    """Coordinate names from a ``fields`` ``axes`` attribute: an HDF5 string array (current
    layout) or a JSON list string (files written before it)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, str):
        return [str(c) for c in json.loads(value)]
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.ravel(value)]
