"""Typed schema of the `length_schedule` config group and its validation (docs/method.md §2.1).

One dataclass serves all schedules (`conf/length_schedule/<name>.yaml`); knobs a schedule does
not use are null in its YAML. The defaults below are ours (the paper gives no constants) and are
tuned for the tiny world, whose complete answers need well over 100 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from c2f_exp.core.errors import bad_value


@dataclass
class LengthScheduleConf:
    name: str = MISSING  # fixed | linear | step | continuous_max
    l_min: int | None = 16  # first limit (linear, continuous_max); null for fixed
    l_max: int | None = 128  # the limit for `fixed`; the ceiling otherwise
    multiple: int = 8  # limits are rounded to a multiple of this (kernel-friendly shapes)
    rate: float | None = 0.3  # continuous_max: logistic growth rate per iteration; null elsewhere
    kappa: float | None = 1.0  # continuous_max: gate steepness on z = (R - V) / s_R
    trunc_min: float | None = 0.05  # continuous_max: grow only if >= this share truncated
    eps: float = 1e-6  # continuous_max: keeps z finite while s_R is 0
    gate_on: str | None = "reward_minus_value"  # continuous_max: z from R - V or the advantage
    steps: int | None = None  # linear: iterations of the l_min -> l_max ramp
    boundaries: list[int] | None = None  # step: iterations at which the limit steps up
    limits: list[int] | None = None  # step: one more limit than boundaries


def max_limit(ls: Any) -> int:
    """The largest rollout limit a `length_schedule` node can reach (`l_max`, or the last of a
    step schedule's `limits`); 0 when it names none."""
    return max([x for x in (ls.get("l_max"), *(ls.get("limits") or [])) if x is not None] or [0])


def validate_schedule(cfg: Any) -> None:
    """Check the `length_schedule` node by building it once (cheap, no tensors).

    Raises:
        ConfigError naming the key: unknown name, l_min > l_max, non-positive rate/kappa,
        trunc_min outside [0, 1], bad step boundaries/limits, a missing required knob.
    """
    from c2f_exp.coarse.length_schedules import build_schedule

    if cfg is None:
        raise bad_value("length_schedule", None, "a schedule config (length_schedule=<name>)")
    build_schedule(cfg)
