"""The errors a user can cause, in one light module (the command line imports it without numpy or torch).

Each one's message names the file, the key or the value at fault and what was expected; the command line
prints
it as one line and exits 2. The modules that raise them re-export them (``longtail.config.ConfigError``,
``longtail.data.DataError``, ``longtail.bundle.BundleError``, ``longtail.store.StoreError``).
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config file or override that does not fit its schema; names the file and the key."""


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


class BundleError(ValueError):
    """A bundle that is missing, of another format, or altered since it was written."""


class StoreError(RuntimeError):
    """A store that is missing, of another schema, or misconfigured."""


class StoreUnavailable(StoreError):
    """The store is locked, busy or unreachable right now; the request may be retried (HTTP 503)."""


USER_ERRORS = (ConfigError, DataError, BundleError, StoreError)
