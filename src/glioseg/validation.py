"""Range checks for configuration values and command-line options, driven by tables.

Each config dataclass (and the CLI) keeps a table ``{field: Range}`` and calls
:func:`check_fields` (or :func:`check_value`) before any work starts, so a bad value is refused
with one line naming the key, its value and the allowed range, e.g.
``error: train.epochs=0 is outside the allowed range (>= 1). Fix: give train.epochs a value >= 1``.
To validate a new field, add a row to its table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from glioseg.errors import GliosegError

MAX_LISTED = 8
"""Values shown when a message lists many (the rest are counted)."""


@dataclass(frozen=True)
class Range:
    """An interval of allowed numbers; ``None`` for an open end. Non-finite values are never allowed.

    Attributes:
        low: smallest allowed value (or infimum when ``low_open``).
        high: largest allowed value (or supremum when ``high_open``).
        low_open: ``low`` itself is not allowed.
        high_open: ``high`` itself is not allowed.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}" if self.low is not None else "any finite number"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


def format_values(values: Any, limit: int = MAX_LISTED) -> str:
    """``[a, b, c]``, or the first ``limit`` values and how many more, so that a message stays short."""
    values = list(values)
    if len(values) <= limit:
        return f"[{', '.join(str(v) for v in values)}]"
    return f"[{', '.join(str(v) for v in values[:limit])}, ... ({len(values) - limit} more)]"


def check_value(key: str, value: Any, allowed: Range) -> None:
    """Raise :class:`GliosegError` unless ``value`` (or each element of a tuple/list) lies in ``allowed``.

    Args:
        key: the name the user wrote (``train.epochs``, ``--overlap``).
        value: a number, or a tuple/list of numbers.
        allowed: the allowed interval.
    """
    items = value if isinstance(value, (tuple, list)) else (value,)
    if all(item in allowed for item in items):
        return
    shown = format_values(value) if isinstance(value, (tuple, list)) else value
    sep = " " if key.startswith("-") else "="
    each = "each value of " if isinstance(value, (tuple, list)) else ""
    raise GliosegError(
        None,
        f"{key}{sep}{shown} is outside the allowed range ({each}{allowed})",
        f"give {each}{key} a value {_phrase(allowed)}",
    )


def _phrase(allowed: Range) -> str:
    text = str(allowed)
    return text if text[0] in "<>" else f"in {text}"


def check_fields(obj: Any, section: str, table: Mapping[str, Range]) -> None:
    """Check the fields of a config dataclass ``obj`` listed in ``table`` (``None`` values are skipped)."""
    for name, allowed in table.items():
        value = getattr(obj, name)
        if value is not None:
            check_value(f"{section}.{name}", value, allowed)


def check_choices(obj: Any, section: str, table: Mapping[str, tuple]) -> None:
    """Check the fields of a config dataclass ``obj`` listed in ``table`` against their choices."""
    for name, choices in table.items():
        value = getattr(obj, name)
        if value not in choices:
            raise refuse(
                f"{section}.{name}",
                value,
                f"is not one of {', '.join(map(str, choices))}",
                f"give {section}.{name} one of {', '.join(map(str, choices))}",
            )


def refuse(key: str, value: Any, problem: str, fix: str) -> GliosegError:
    """The error for a value that breaks a rule other than a range (e.g. repeated names)."""
    sep = " " if key.startswith("-") else "="
    return GliosegError(
        None, f"{key}{sep}{format_values(value) if isinstance(value, (tuple, list)) else value} {problem}", fix
    )
