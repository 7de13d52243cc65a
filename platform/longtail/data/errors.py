"""The one error type of the data layer: it always names where, what was found and what was expected."""

from __future__ import annotations

from longtail.errors import DataError

__all__ = ["DataError", "shorten"]


def shorten(value: object, limit: int = 60) -> str:
    """``repr`` of a value cut to ``limit`` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
