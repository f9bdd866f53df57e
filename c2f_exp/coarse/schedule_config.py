"""Typed schema of the `length_schedule` config group and its validation (docs/method.md §2.1).

One dataclass serves all schedules (`conf/length_schedule/<name>.yaml`); knobs a schedule does
not use are null in its YAML. The defaults below are the only ones: they are the default
option's, Continuous Maximization (conf/length_schedule/continuous_max.yaml only names it), ours
(the paper gives no constants) and tuned for the tiny world, whose complete answers need well
over 100 tokens. Other options hold only what they change.

Continuous Maximization (docs/method.md §2.1): the limit grows logistically from l_min to l_max,
gated by sigmoid(kappa * (R - V) / s_R), and only while >= trunc_min of responses are cut off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from c2f_exp.core.choices import choice

ScheduleName = choice("ScheduleName", ("fixed", "linear", "step", "continuous_max"), __name__)
GateOn = choice("GateOn", ("reward_minus_value", "advantage"), __name__)


@dataclass
class LengthScheduleConf:
    name: ScheduleName = MISSING  # the kind (fixed | linear | step | continuous_max)
    # first limit (linear, continuous_max; null for fixed): about two facts
    l_min: int | None = 16
    # the limit for `fixed`; the ceiling otherwise: a complete analytical answer (12 facts +
    # explanations) fits
    l_max: int | None = 128
    multiple: int = 8  # limits are rounded to a multiple of this (kernel-friendly shapes)
    # continuous_max: logistic growth rate per iteration (null elsewhere); ~15 iterations
    # 16 -> 120 at gate 1, ~30 at gate 0.5
    rate: float | None = 0.3
    # continuous_max: gate steepness on z = (R - V) / s_R, in units of reward std
    kappa: float | None = 1.0
    # continuous_max, ours: no growth while < 5% of responses hit the limit; null (the paper's
    # gate alone) gave the same mean with 4x the spread (docs/results.md)
    trunc_min: float | None = 0.05
    eps: float = 1e-6  # continuous_max: keeps z finite while s_R is 0
    # continuous_max: z from R - V (reward_minus_value) | advantage: the mean unwhitened GAE
    # advantage (KL penalty included) / its running std
    gate_on: GateOn | None = GateOn.reward_minus_value
    steps: int | None = None  # linear: iterations of the l_min -> l_max ramp
    boundaries: list[int] | None = None  # step: iterations at which the limit steps up
    limits: list[int] | None = None  # step: one more limit than boundaries

    def __post_init__(self) -> None:
        """Build the schedule once (cheap, no tensors): an unknown name, l_min > l_max, a
        non-positive rate or kappa, trunc_min outside [0, 1], bad step boundaries or limits, a
        knob the schedule needs left null: ConfigError naming the key."""
        from c2f_exp.coarse.length_schedules import build_schedule

        if self.name != MISSING:  # the schema's own default instance names no schedule
            build_schedule(self)


def max_limit(ls: Any) -> int:
    """The largest rollout limit a `length_schedule` node can reach (`l_max`, or the last of a
    step schedule's `limits`); 0 when it names none."""
    limits = (ls.l_max, *(ls.limits or []))
    return max([x for x in limits if x is not None] or [0])
