"""How an option's value is read: text (pytest's command line or ini file, the CLI) or an
already typed value (the API) in, the value or :class:`BadValue` out.

Apart from the table (:mod:`pytest_millrun.config.option_table`) so that the table stays
data; both are imported in every pytest run, and neither imports pytest nor click.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytest_millrun.config.option_table import Option


class BadValue(ValueError):
    """A value a parse function refuses; ``reason`` completes "--option ..." (no flag in it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_flag(value: Any) -> bool:
    return bool(value)


def parse_text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def parse_list(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"a, b"`` or a sequence: the parts, stripped, empty ones dropped."""
    if not value:
        return ()
    parts = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(part).strip() for part in parts if str(part).strip())


def parse_seconds(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if isinstance(value, bool) or not seconds > 0:
        raise BadValue("must be a positive number of seconds")
    return seconds


def parse_tolerance(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not 0 <= number < float("inf"):
        raise BadValue("must be a number >= 0 (e.g. 1e-9)")
    return number


def parse_choice(option: Option, value: Any) -> str:
    if value in (None, ""):
        return str(option.default)
    if value not in option.choices:
        raise BadValue(f"must be one of {', '.join(option.choices)}")
    return str(value)


def parse_count(value: Any) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if isinstance(value, bool) or number < 1:
        raise BadValue("must be a whole number >= 1")
    return number


def parse_mib(value: Any) -> int | None:
    if value in (None, ""):
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit():
        raise BadValue("must be a whole number of MiB (0 or more)")
    return int(text)


def parse(option: Option, value: Any) -> Any:
    """The value of ``option`` from text (or an already typed value), or :class:`BadValue`."""
    if option.kind == "flag":
        return parse_flag(value)
    if option.kind == "list":
        return parse_list(value)
    if option.kind == "seconds":
        return parse_seconds(value)
    if option.kind == "tolerance":
        return parse_tolerance(value)
    if option.kind == "choice":
        return parse_choice(option, value)
    if option.kind == "count":
        return parse_count(value)
    if option.kind == "mib":
        return parse_mib(value)
    if option.kind == "level":
        return int(value or 0)
    if option.kind == "object":  # the API's as given; text (pytest, the CLI): "" is unset
        return None if isinstance(value, str) and not value else value
    return parse_text(value)  # text; paths are made absolute by the resolution
