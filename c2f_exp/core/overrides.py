"""Hydra override strings: parsing and the short names runs and tables use for swept keys.

Shared by sweeping.py (run identity) and compare.py (tables): a leaf, so neither imports the
other for it.
"""

from __future__ import annotations

from typing import Any

# Short names for run names and wandb config keys (the rest: the key's last dotted part).
ALIASES = {"merger.coefficient": "lambda", "length_schedule": "schedule"}


def short_name(key: str) -> str:
    """`merger.coefficient` -> `lambda`, `length_schedule.rate` -> `rate`, `+seed` -> `seed`."""
    key = key.lstrip("+~")
    return ALIASES.get(key, key.rsplit(".", 1)[-1])


def parse(overrides: list[str]) -> list[Any]:
    """Hydra `Override` objects of command-line override strings."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(overrides)
