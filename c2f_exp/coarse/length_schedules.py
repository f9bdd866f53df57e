"""Rollout length limits l(t): one interface, one registry (docs/method.md §2.1).

`update(stats)` is called once per PPO iteration t with that iteration's batch statistics
(taken before the policy update) and returns the limit for iteration t + 1. Every schedule is
monotone non-decreasing. Schedule state is part of the PPO checkpoint (`state_dict`).

Continuous Maximization (our reading of Mistral-C2F, docs/method.md §2.1):

    z_t = (R_t - V_t) / (s_R + eps)          # returns beat the critic's expectation
        (gate_on=advantage: z_t = mean_i A_i / (s_A + eps), A_i the unwhitened GAE advantage
         at sample i's first response token, s_A the running std of the A_i)
    g_t = sigmoid(kappa z_t);  g_t = 0 if trunc_t < trunc_min
    l(t) = l(t-1) + rate g_t l(t-1) (1 - l(t-1) / l_max)      # logistic growth
    limit = clamp(round_to(l(t), multiple), l_min, l_max)

One deliberate detail: the growth acts on the *unrounded* l(t), and only the limit in force is
rounded. Rounding l(t) itself to a multiple of 8 would freeze it whenever one step's growth is
under 4 tokens (at l=16, rate 0.3 and g=0.5 it grows by 2.1): the schedule would never move.
"""

from __future__ import annotations

import bisect
import inspect
import itertools
import math
from dataclasses import dataclass
from typing import Any

from c2f_exp.core.errors import bad_value

NAN = float("nan")


@dataclass
class LengthStats:
    """Statistics of one PPO batch, taken before the update.

    step: the iteration these statistics come from (0-based).
    reward_mean: R_t, mean sequence score of the reward model (before the KL penalty).
    value_mean: V_t, mean critic value at the first response position.
    truncation_rate: share of responses that hit the limit in force without EOS.
    rewards: per-sample scores of the batch (for the running std s_R); None -> reward_mean.
    advantages: per-sample unwhitened GAE advantages at the first response token (KL penalty
        included), for `gate_on=advantage`.
    """

    step: int
    reward_mean: float
    value_mean: float
    truncation_rate: float
    rewards: list[float] | None = None
    advantages: list[float] | None = None


def round_to(x: float, multiple: int) -> int:
    """Nearest multiple of `multiple` (ties to even, as Python's round)."""
    return round(x / multiple) * multiple


def _int_ge1(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_value(key, value, "an integer >= 1")
    return value


def _bounds(l_min: Any, l_max: Any) -> tuple[int, int]:
    lo, hi = _int_ge1("l_min", l_min), _int_ge1("l_max", l_max)
    if lo > hi:
        raise bad_value("l_min", lo, f"<= l_max ({hi})", "lower l_min or raise l_max")
    return lo, hi


class LengthSchedule:
    """Base class: `limit` is the limit in force; `last` holds the last update's diagnostics."""

    name = ""

    def __init__(self, limit: int):
        self.limit = int(limit)
        self.last: dict[str, float] = {"gate": NAN, "z": NAN}

    def update(self, stats: LengthStats) -> int:
        """Take iteration `stats.step`'s statistics; return the limit for the next iteration."""
        self.limit = max(self.limit, self._next(stats))
        return self.limit

    def _next(self, stats: LengthStats) -> int:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "limit": self.limit, "last": dict(self.last)}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if d.get("name") != self.name:
            raise ValueError(f"length schedule state is for {d.get('name')!r}, not {self.name!r}")
        self.limit = int(d["limit"])
        self.last = dict(d["last"])


class FixedSchedule(LengthSchedule):
    """Standard PPO: the limit is always `l_max`."""

    name = "fixed"

    def __init__(self, l_max: int):
        super().__init__(_int_ge1("l_max", l_max))

    def _next(self, stats: LengthStats) -> int:
        return self.limit


class LinearSchedule(LengthSchedule):
    """Ramp l_min -> l_max over `steps` iterations, rounded to `multiple`, then hold."""

    name = "linear"

    def __init__(self, l_min: int, l_max: int, steps: int, multiple: int = 1):
        self.l_min, self.l_max = _bounds(l_min, l_max)
        self.steps, self.multiple = _int_ge1("steps", steps), _int_ge1("multiple", multiple)
        super().__init__(self.l_min)

    def _next(self, stats: LengthStats) -> int:
        frac = min(max(stats.step + 1, 0), self.steps) / self.steps
        raw = self.l_min + (self.l_max - self.l_min) * frac
        return min(max(round_to(raw, self.multiple), self.l_min), self.l_max)


class StepSchedule(LengthSchedule):
    """Staged limits (e.g. 8k -> 16k -> 24k, DeepScaleR): `limits[i]` from `boundaries[i-1]`.

    The limit at iteration t is limits[number of boundaries <= t].
    """

    name = "step"

    def __init__(self, boundaries: list[int], limits: list[int]):
        if not limits or len(limits) != len(boundaries or []) + 1:
            raise bad_value(
                "limits",
                limits,
                f"a list one longer than boundaries ({len(boundaries or [])} boundaries)",
            )
        self.limits = [_int_ge1("limits", x) for x in limits]
        self.boundaries = [_int_ge1("boundaries", b) for b in boundaries or []]
        if any(b >= c for b, c in itertools.pairwise(self.boundaries)):
            raise bad_value("boundaries", boundaries, "strictly increasing steps")
        if any(a > b for a, b in itertools.pairwise(self.limits)):
            raise bad_value("limits", limits, "non-decreasing limits")
        super().__init__(self.limits[0])

    def _next(self, stats: LengthStats) -> int:
        return self.limits[bisect.bisect_right(self.boundaries, stats.step + 1)]


class ContinuousMaxSchedule(LengthSchedule):
    """Continuous Maximization: logistic growth gated by (R_t - V_t) / s_R (module docstring).

    s_R is the running standard deviation of all per-sample rewards seen so far (Welford).
    A batch with a non-finite R_t - V_t (or no finite advantage) does not grow the limit and is
    left out of s_R.
    `gate_on="advantage"` gates on the batch's mean unwhitened advantage over its running std
    instead (the variant the paper's formula leaves open: R - V ignores the KL penalty the
    critic learns to expect; the advantage includes it).
    """

    name = "continuous_max"

    def __init__(
        self,
        l_min: int,
        l_max: int,
        rate: float,
        kappa: float = 1.0,
        trunc_min: float | None = None,
        multiple: int = 1,
        eps: float = 1e-6,
        gate_on: str = "reward_minus_value",
    ):
        self.l_min, self.l_max = _bounds(l_min, l_max)
        self.multiple = _int_ge1("multiple", multiple)
        for key, v in (("rate", rate), ("kappa", kappa), ("eps", eps)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
                raise bad_value(key, v, "a finite number > 0")
        if trunc_min is not None and not 0 <= trunc_min <= 1:
            raise bad_value("trunc_min", trunc_min, "null or within [0, 1]")
        if gate_on not in GATE_SIGNALS:
            raise bad_value("gate_on", gate_on, "one of " + ", ".join(GATE_SIGNALS))
        self.rate, self.kappa, self.eps, self.trunc_min = rate, kappa, eps, trunc_min
        self.gate_on = gate_on
        self.length = float(self.l_min)  # unrounded l(t)
        self._n, self._mean, self._m2 = 0, 0.0, 0.0  # Welford accumulators of the rewards
        super().__init__(self.l_min)

    @property
    def reward_std(self) -> float:
        """s_R: running (population) standard deviation of the rewards seen so far (of the
        advantages with gate_on=advantage)."""
        return math.sqrt(self._m2 / self._n) if self._n else 0.0

    def _observe(self, xs: list[float]) -> None:
        for x in xs:
            if math.isfinite(x):
                self._n += 1
                d = x - self._mean
                self._mean += d / self._n
                self._m2 += d * (x - self._mean)

    def _signal(self, stats: LengthStats) -> tuple[float, list[float]]:
        """The gate's signal for this batch and the samples its running std observes."""
        if self.gate_on == "advantage":
            if stats.advantages is None:
                raise ValueError("length_schedule.gate_on=advantage needs LengthStats.advantages")
            adv = [a for a in stats.advantages if math.isfinite(a)]
            return (sum(adv) / len(adv) if adv else NAN), adv
        r = stats.reward_mean
        return r - stats.value_mean, list(stats.rewards) if stats.rewards is not None else [r]

    def _next(self, stats: LengthStats) -> int:
        signal, samples = self._signal(stats)
        if not math.isfinite(signal):
            self.last = {
                "gate": 0.0,
                "z": NAN,
                "s_R": self.reward_std,
                "growth": 0.0,
                "length": self.length,
            }
            return self.limit
        self._observe(samples)
        s = self.reward_std
        z = signal / (s + self.eps)
        gate = 1.0 / (1.0 + math.exp(-max(min(self.kappa * z, 500.0), -500.0)))
        if self.trunc_min is not None and stats.truncation_rate < self.trunc_min:
            gate = 0.0
        growth = self.rate * gate * self.length * max(0.0, 1.0 - self.length / self.l_max)
        self.length = min(self.length + growth, float(self.l_max))
        self.last = {"gate": gate, "z": z, "s_R": s, "growth": growth, "length": self.length}
        return min(max(round_to(self.length, self.multiple), self.l_min), self.l_max)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "length": self.length,
            "n": self._n,
            "mean": self._mean,
            "m2": self._m2,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        super().load_state_dict(d)
        self.length, self._n = float(d["length"]), int(d["n"])
        self._mean, self._m2 = float(d["mean"]), float(d["m2"])


GATE_SIGNALS = ("reward_minus_value", "advantage")

SCHEDULES: dict[str, type[LengthSchedule]] = {
    "fixed": FixedSchedule,
    "linear": LinearSchedule,
    "step": StepSchedule,
    "continuous_max": ContinuousMaxSchedule,
}


def build_schedule(cfg: Any) -> LengthSchedule:
    """Build the schedule named by `cfg.name` from the `length_schedule` config node.

    The other keys are constructor arguments; keys the chosen class does not take (other
    schedules' knobs in the shared schema) and null values are left out.
    """
    items = dict(cfg.items()) if hasattr(cfg, "items") else dict(vars(cfg))
    name = items.pop("name", None)
    if name not in SCHEDULES:
        raise bad_value("name", name, "one of " + ", ".join(SCHEDULES))
    cls = SCHEDULES[name]
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: _plain(v) for k, v in items.items() if k in params and v is not None}
    missing = [
        p.name
        for p in params.values()
        if p.default is inspect.Parameter.empty and p.name != "self" and p.name not in kwargs
    ]
    if missing:
        raise bad_value(missing[0], None, f"set for length_schedule={name}")
    return cls(**kwargs)


def _plain(v: Any) -> Any:
    """OmegaConf ListConfig -> list (constructors check plain types)."""
    return list(v) if hasattr(v, "__iter__") and not isinstance(v, (str, dict)) else v
