"""User-facing errors: one line naming the bad key/path and the fix (docs/method.md §5)."""

from __future__ import annotations


class C2FError(Exception):
    """An error caused by the user's input; printed as one line, exit status 2."""


class ConfigError(C2FError):
    """A configuration value is invalid or inconsistent."""


class BadValue(ConfigError):
    """`<key> must be <expected> (got <value>)[; <fix>]`: built by `bad_value`.

    A schema class's rules name their keys relative to the class (`lr`, `rollout.engine`);
    `config.typed` puts the node's path in front (`coarse.lr`) with `under`."""

    def __init__(self, key: str, value: object, expected: str, fix: str | None = None):
        self.key, self.value, self.expected, self.fix = key, value, expected, fix
        msg = f"{key} must be {expected} (got {value!r})"
        super().__init__(f"{msg}; {fix}" if fix else msg)

    def under(self, prefix: str) -> BadValue:
        """The same error with `prefix.` in front of its key."""
        key = f"{prefix}.{self.key}" if prefix else self.key
        return BadValue(key, self.value, self.expected, self.fix)


def bad_value(key: str, value: object, expected: str, fix: str | None = None) -> ConfigError:
    """`<key> must be <expected> (got <value>)[; <fix>]`."""
    return BadValue(key, value, expected, fix)


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


# numpy (transformers.set_seed) takes only 0 <= seed < 2**32, and stages derive seeds by adding
# small offsets (world seed + 7, ...): 31 bits leave room.
MAX_SEED = 2**31 - 1


def check_seed(key: str, value: int | None) -> None:
    """A seed field: null (where allowed) or an integer in [0, MAX_SEED]."""
    if value is not None and not 0 <= value <= MAX_SEED:
        raise bad_value(
            key, value, f"an integer in [0, {MAX_SEED}]", "numpy and torch seed from 32 bits"
        )
