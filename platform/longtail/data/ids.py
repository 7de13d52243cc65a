"""Natural order of ids: numeric when every id is an integer, else plain string order."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def natural_order(ids: Sequence[str] | np.ndarray) -> np.ndarray:
    """Indices that sort ``ids`` naturally (stable)."""
    arr = np.asarray(ids, dtype=object)
    if len(arr) == 0:
        return np.zeros(0, dtype=np.int64)
    text = np.asarray(arr, dtype=str)
    try:
        return np.argsort(text.astype(np.int64), kind="stable")
    except (ValueError, OverflowError):
        return np.argsort(text, kind="stable")


def naturally_sorted_unique(ids: Sequence[str] | np.ndarray) -> np.ndarray:
    """Distinct ids in natural order, as an object array of str."""
    uniq = np.unique(np.asarray(ids, dtype=str))
    return np.asarray(uniq[natural_order(uniq)], dtype=object)


def encode(ids: Sequence[str] | np.ndarray, vocabulary: np.ndarray) -> np.ndarray:
    """Positions of ``ids`` in ``vocabulary``; -1 where an id is not in it."""
    vocab = np.asarray(vocabulary, dtype=str)
    if len(vocab) == 0:
        return np.full(len(ids), -1, dtype=np.int64)
    order = np.argsort(vocab, kind="stable")
    sorted_vocab = vocab[order]
    query = np.asarray(ids, dtype=str)
    pos = np.searchsorted(sorted_vocab, query)
    pos = np.clip(pos, 0, len(vocab) - 1)
    found = sorted_vocab[pos] == query
    return np.where(found, order[pos], -1).astype(np.int64)
