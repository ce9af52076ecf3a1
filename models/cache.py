"""Plain arrays kept on disk by the hash of what they were computed from: a cache any process may read while
another writes, that never runs code when read (``allow_pickle=False``) and never holds half a file.

Used for what costs seconds to compute and is the same whenever its inputs are: item texts' MiniLM vectors
(:func:`models.data.text.embed_minilm`) and the closed-form recipe's ALS source
(:func:`models.transfer.closed_form.source_model`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def read_array(file: Path, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray | None:
    """The array in ``file`` when it has ``shape`` and ``dtype``; None when there is none yet, or a damaged or
    different one (computed again and rewritten by the caller)."""
    try:
        array = np.load(file, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return array if array.shape == shape and array.dtype == np.dtype(dtype) else None


def write_array(file: Path, array: np.ndarray) -> None:
    """Write ``file`` whole or not at all (another process reading it never sees half of it); a folder that
    cannot be written only means no cache."""
    temporary = None
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=file.parent, suffix=".npy.tmp")
        with os.fdopen(handle, "wb") as out:
            np.save(out, array, allow_pickle=False)
        os.replace(temporary, file)
    except OSError:
        if temporary is not None:  # a full disk: no half-written file stays behind
            Path(temporary).unlink(missing_ok=True)
