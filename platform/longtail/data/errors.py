"""The one error type of the data layer: it always names where, what was found and what was expected."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data, located precisely enough for a person to fix it.

    The message reads ``FILE: WHERE: PROBLEM (found FOUND; expected EXPECTED)``, dropping parts that are
    unknown. ``where`` is e.g. ``"line 12, column 'item_id'"`` for text files or ``"row 7"`` for Parquet.
    """

    def __init__(
        self,
        file: str,
        problem: str,
        *,
        where: str | None = None,
        found: str | None = None,
        expected: str | None = None,
    ) -> None:
        self.file, self.where, self.problem = file, where, problem
        self.found, self.expected = found, expected
        super().__init__(self._format())

    def _format(self) -> str:
        head = f"{self.file}: {self.where}: " if self.where else f"{self.file}: "
        details = []
        if self.found is not None:
            details.append(f"found {self.found}")
        if self.expected is not None:
            details.append(f"expected {self.expected}")
        tail = f" ({'; '.join(details)})" if details else ""
        return f"{head}{self.problem}{tail}"


def shorten(value: object, limit: int = 60) -> str:
    """``repr`` of a value cut to ``limit`` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
