"""User-facing errors: one line naming the bad key/path and the fix (docs/method.md §5)."""

from __future__ import annotations


class C2FError(Exception):
    """An error caused by the user's input; printed as one line, exit status 2."""


class ConfigError(C2FError):
    """A configuration value is invalid or inconsistent."""


def bad_value(key: str, value: object, expected: str, fix: str | None = None) -> ConfigError:
    """`<key> must be <expected> (got <value>)[; <fix>]`."""
    msg = f"{key} must be {expected} (got {value!r})"
    return ConfigError(f"{msg}; {fix}" if fix else msg)


def check_choice(key: str, value: object, choices: tuple[str, ...]) -> None:
    """Raise `bad_value` unless `value` is one of `choices`."""
    if value not in choices:
        raise bad_value(key, value, "one of " + ", ".join(choices))


def check_save_steps(key: str, value: object) -> None:
    """A trainer's checkpoint interval: an integer >= 0 (0: no checkpoints)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad_value(
            key, value, "an integer >= 0", "steps between checkpoints; 0 turns them off"
        )


def check_positive(key: str, value: object) -> None:
    """Raise `bad_value` unless `value` is a number > 0 (None included)."""
    if value is None or not value > 0:  # type: ignore[operator]
        raise bad_value(key, value, "> 0")
