"""User-facing errors: one readable line naming the bad key/path and the fix (DESIGN §5)."""

from __future__ import annotations


class C2FError(Exception):
    """An error caused by the user's input; printed as one line, exit status 2."""


class ConfigError(C2FError):
    """A configuration value is invalid or inconsistent."""


def bad_value(key: str, value: object, expected: str, fix: str | None = None) -> ConfigError:
    """`<key> must be <expected> (got <value>)[; <fix>]`."""
    msg = f"{key} must be {expected} (got {value!r})"
    return ConfigError(f"{msg}; {fix}" if fix else msg)
