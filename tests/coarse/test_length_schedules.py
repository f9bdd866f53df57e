"""Length schedules: registry <-> YAML, CM by hand, monotone and bounded, gates, state."""

from __future__ import annotations

import json
import math
import random

import pytest
from omegaconf import OmegaConf

from c2f_exp.coarse.length_schedules import (
    SCHEDULES,
    ContinuousMaxSchedule,
    LengthStats,
    LinearSchedule,
    StepSchedule,
    build_schedule,
)
from c2f_exp.coarse.schedule_config import LengthScheduleConf
from tests.conftest import CONF
from tests.helpers import check, compose_root, config_error

YAMLS = sorted((CONF / "length_schedule").glob("*.yaml"))


def _node(stem: str, **over):
    """The group's YAML merged into its schema, as Hydra composes it."""
    node = OmegaConf.merge(
        OmegaConf.structured(LengthScheduleConf),
        OmegaConf.load(CONF / "length_schedule" / f"{stem}.yaml"),
    )
    for k, v in over.items():
        node[k] = v
    return node


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_registry_matches_yaml_stems():
    """Each schedule kind has a YAML of its own name; every other YAML is a preset of a kind."""
    stems = {p.stem for p in YAMLS}
    assert set(SCHEDULES) <= stems
    for kind, cls in SCHEDULES.items():
        assert OmegaConf.load(CONF / "length_schedule" / f"{kind}.yaml").name == kind
        assert cls.name == kind


@pytest.mark.parametrize("stem", [p.stem for p in YAMLS])
def test_every_yaml_composes_to_a_registered_kind(conf, stem):
    ls = conf([f"length_schedule={stem}"]).length_schedule  # typed: the schema's rules ran
    assert ls.name in SCHEDULES, f"{stem}.yaml composes to unknown kind {ls.name!r}"
    assert isinstance(build_schedule(ls), SCHEDULES[ls.name])


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_yaml_builds_and_validates(name):
    assert isinstance(OmegaConf.to_object(_node(name)), LengthScheduleConf)  # its rules pass
    s = build_schedule(_node(name))
    assert isinstance(s, SCHEDULES[name])
    assert math.isnan(s.last["gate"]) and "z" in s.last


def test_documented_cm_defaults():
    s = build_schedule(_node("continuous_max"))
    assert (s.l_min, s.l_max, s.multiple, s.rate, s.kappa, s.trunc_min) == (
        16,
        128,
        8,
        0.3,
        1.0,
        0.05,
    )
    assert s.limit == 16


def test_cm_one_update_by_hand():
    s = ContinuousMaxSchedule(
        l_min=16, l_max=128, rate=0.5, kappa=1.0, trunc_min=0.05, multiple=8, eps=1e-6
    )
    new = s.update(
        LengthStats(
            step=0, reward_mean=2.0, value_mean=1.0, truncation_rate=0.5, rewards=[1.0, 3.0]
        )
    )
    # s_R = std(1, 3) = 1; z = (2 - 1) / (1 + 1e-6); g = sigmoid(z) = 0.7310582
    # growth = 0.5 * g * 16 * (1 - 16/128) = 5.117408 -> l = 21.117408 -> nearest 8: 24
    g = _sigmoid(1 / (1 + 1e-6))
    assert s.last["z"] == pytest.approx(1 / (1 + 1e-6))
    assert s.last["gate"] == pytest.approx(g)
    assert s.last["growth"] == pytest.approx(0.5 * g * 16 * 0.875)
    assert (new, s.limit) == (24, 24)
    # second batch: rewards (2, 2), R = V = 2 -> z = 0, g = 1/2; s_R = std(1,3,2,2) = sqrt(.5)
    # growth = 0.5 * 0.5 * 21.117408 * (1 - 21.117408/128) = 4.408342 -> l = 25.52575 -> 24
    s.update(LengthStats(1, 2.0, 2.0, 0.5, [2.0, 2.0]))
    assert s.last["s_R"] == pytest.approx(math.sqrt(0.5))
    assert s.last["gate"] == pytest.approx(0.5)
    assert s.length == pytest.approx(25.52575, abs=1e-4)
    assert s.limit == 24  # the unrounded length keeps growing under a rounded limit


def test_cm_grows_despite_rounding_where_rounded_state_would_freeze():
    # at l = 16, rate 0.3 and gate 1/2 a step grows 2.1 tokens (< multiple/2): a schedule that
    # rounded its own state would stay at 16 forever
    s = ContinuousMaxSchedule(16, 128, rate=0.3, kappa=1.0, trunc_min=None, multiple=8)
    for t in range(6):
        s.update(LengthStats(t, 1.0, 1.0, 1.0, [0.0, 2.0]))
    assert s.limit > 16


def test_cm_advantage_gate_by_hand():
    """gate_on=advantage: z = mean A / s_A; R and V do not enter."""
    s = ContinuousMaxSchedule(16, 128, rate=0.5, trunc_min=None, multiple=8, gate_on="advantage")
    s.update(LengthStats(0, 2.0, 2.0, 0.5, rewards=[0.0, 9.0], advantages=[1.0, 3.0]))
    # s_A = std(1, 3) = 1 (the rewards are not observed); z = 2 / (1 + 1e-6)
    assert s.last["s_R"] == pytest.approx(1.0)
    assert s.last["z"] == pytest.approx(2 / (1 + 1e-6))
    assert s.last["gate"] == pytest.approx(_sigmoid(2 / (1 + 1e-6)))
    # the same batch under the default signal: R - V = 0 -> gate 1/2
    d = ContinuousMaxSchedule(16, 128, rate=0.5, trunc_min=None, multiple=8)
    d.update(LengthStats(0, 2.0, 2.0, 0.5, rewards=[0.0, 9.0], advantages=[1.0, 3.0]))
    assert d.last["gate"] == pytest.approx(0.5)
    # negative advantages close the gate towards 0; non-finite ones are left out
    s.update(LengthStats(1, 2.0, 0.0, 0.5, [0.0], advantages=[-3.0, float("nan"), -5.0]))
    # s_A = std(1, 3, -3, -5) = sqrt(10); z = -4 / sqrt(10)
    assert s.last["z"] == pytest.approx(-4 / math.sqrt(10), rel=1e-5)
    assert s.last["gate"] == pytest.approx(_sigmoid(-4 / math.sqrt(10)), rel=1e-5)
    # no finite advantage: no growth, and s_A is left as it was
    before = (s.length, s.last["s_R"])
    s.update(LengthStats(2, 1.0, 0.0, 0.5, [1.0], advantages=[float("nan")]))
    assert (s.length, s.last["s_R"]) == before and s.last["gate"] == 0.0
    with pytest.raises(ValueError, match="gate_on=advantage needs"):
        s.update(LengthStats(2, 1.0, 0.0, 0.5, [1.0]))


def test_cm_truncation_gate():
    s = ContinuousMaxSchedule(16, 128, rate=0.5, kappa=1.0, trunc_min=0.05, multiple=8)
    s.update(LengthStats(0, 5.0, 0.0, truncation_rate=0.04, rewards=[4.0, 6.0]))
    assert s.last["gate"] == 0.0 and s.length == 16.0 and s.limit == 16
    assert s.last["s_R"] == pytest.approx(1.0)  # the rewards still count for s_R
    s.update(LengthStats(1, 5.0, 0.0, truncation_rate=0.05, rewards=[4.0, 6.0]))
    assert s.last["gate"] > 0.99 and s.limit > 16


def test_cm_low_reward_gate_is_small():
    s = ContinuousMaxSchedule(16, 128, rate=0.5, kappa=4.0, multiple=1)
    s.update(
        LengthStats(0, reward_mean=-3.0, value_mean=0.0, truncation_rate=1.0, rewards=[-4.0, -2.0])
    )
    # z = -3, g = sigmoid(-12): growth ~ 6e-6 tokens
    assert s.last["gate"] == pytest.approx(_sigmoid(-12.0), rel=1e-4) and s.limit == 16


def test_cm_nonfinite_stats_do_not_grow_or_poison_state():
    s = ContinuousMaxSchedule(16, 128, rate=0.5, multiple=8)
    s.update(LengthStats(0, 1.0, 0.0, 1.0, [0.0, 2.0]))
    before = s.state_dict()
    s.update(LengthStats(1, float("nan"), 0.0, 1.0, [float("nan")] * 2))
    assert s.last["gate"] == 0.0 and s.length == before["length"] and s.limit == before["limit"]
    s.update(LengthStats(2, 1.0, 0.0, 1.0, [0.0, 2.0, float("inf")]))
    assert math.isfinite(s.last["s_R"]) and s.last["s_R"] == pytest.approx(1.0)


def test_cm_reaches_l_max_and_stays_there():
    s = ContinuousMaxSchedule(16, 128, rate=0.3, kappa=1.0, trunc_min=0.05, multiple=8)
    for t in range(300):
        s.update(LengthStats(t, 10.0, 0.0, 1.0, [9.0, 11.0]))
    assert s.limit == 128 and s.length <= 128


def _random_stats(rng: random.Random, t: int) -> LengthStats:
    rewards = [
        rng.gauss(rng.uniform(-2, 2), rng.uniform(0.01, 3)) for _ in range(rng.randint(1, 8))
    ]
    return LengthStats(t, sum(rewards) / len(rewards), rng.gauss(0, 2), rng.random(), rewards)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_monotone_and_bounded_over_random_stats(name, seed):
    rng = random.Random(seed)
    over = {
        "continuous_max": {
            "rate": rng.uniform(0.05, 2.0),
            "kappa": rng.uniform(0.1, 5.0),
            "l_min": rng.choice([8, 16, 24]),
            "l_max": rng.choice([64, 100]),
        },
        "linear": {"steps": rng.randint(1, 40)},
    }.get(name, {})
    s = build_schedule(_node(name, **over))
    lo = s.limits[0] if name == "step" else getattr(s, "l_min", s.limit)
    hi = s.limits[-1] if name == "step" else getattr(s, "l_max", s.limit)
    prev = s.limit
    assert lo <= prev <= hi
    for t in range(80):
        new = s.update(_random_stats(rng, t))
        assert new == s.limit and prev <= new and lo <= new <= hi
        prev = new


@pytest.mark.parametrize("name", ["linear", "continuous_max"])
def test_limits_are_multiples(name):
    s = build_schedule(_node(name, rate=1.0) if name == "continuous_max" else _node(name))
    rng = random.Random(0)
    seen = set()
    for t in range(60):
        seen.add(s.update(_random_stats(rng, t)))
    assert all(x % 8 == 0 for x in seen) and len(seen) > 2


def test_linear_and_step_by_hand():
    lin = LinearSchedule(l_min=16, l_max=128, steps=4, multiple=8)
    # limit for t+1 = 16 + 112 (t+1)/4 = 44, 72, 100, 128, 128; to the nearest 8 with ties to
    # even: 44/8 = 5.5 -> 6 -> 48, 72, 100/8 = 12.5 -> 12 -> 96, 128, 128
    got = [lin.update(LengthStats(t, 0.0, 0.0, 0.0)) for t in range(5)]
    assert got == [48, 72, 96, 128, 128]
    st = StepSchedule(boundaries=[2, 4], limits=[32, 64, 128])
    assert st.limit == 32
    assert [st.update(LengthStats(t, 0.0, 0.0, 0.0)) for t in range(5)] == [32, 64, 64, 128, 128]


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_state_dict_round_trip(name):
    rng = random.Random(7)
    stats = [_random_stats(rng, t) for t in range(30)]
    a = build_schedule(_node(name, rate=1.5) if name == "continuous_max" else _node(name))
    for st in stats[:12]:
        a.update(st)
    b = build_schedule(_node(name, rate=1.5) if name == "continuous_max" else _node(name))
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))  # survives a JSON checkpoint
    assert b.limit == a.limit
    for st in stats[12:]:
        assert a.update(st) == b.update(st)
    assert json.dumps(a.state_dict(), sort_keys=True) == json.dumps(b.state_dict(), sort_keys=True)


def test_state_of_another_schedule_is_refused():
    with pytest.raises(ValueError, match="fixed"):
        build_schedule(_node("linear")).load_state_dict(
            build_schedule(_node("fixed")).state_dict()
        )


@pytest.mark.parametrize(
    "name, over, needle",
    [
        ("continuous_max", {"l_min": 200}, "length_schedule.l_min"),
        ("linear", {"l_min": 200}, "length_schedule.l_min"),
        ("continuous_max", {"rate": 0.0}, "length_schedule.rate"),
        ("continuous_max", {"rate": -0.3}, "length_schedule.rate"),
        ("continuous_max", {"kappa": 0.0}, "length_schedule.kappa"),
        ("continuous_max", {"kappa": -1.0}, "length_schedule.kappa"),
        ("continuous_max", {"rate": None}, "length_schedule.rate"),
        ("continuous_max", {"trunc_min": 1.5}, "length_schedule.trunc_min"),
        ("continuous_max", {"gate_on": "r_minus_v"}, "length_schedule.gate_on"),
        ("continuous_max", {"multiple": 0}, "length_schedule.multiple"),
        ("fixed", {"l_max": 0}, "length_schedule.l_max"),
        ("linear", {"steps": 0}, "length_schedule.steps"),
        ("step", {"limits": [64, 32, 128]}, "length_schedule.limits"),
        ("step", {"limits": [32, 64]}, "length_schedule.limits"),
        ("step", {"boundaries": [30, 15]}, "length_schedule.boundaries"),
        ("fixed", {"name": "exponential"}, "length_schedule.name"),
    ],
)
def test_bad_values_give_one_line_named_errors(name, over, needle):
    """Through `check` (what runs before any stage); a choice field (name, gate_on) fails when
    the value is set, as the CLI's composition error (`cli_errors.one_line`)."""
    cfg = compose_root([f"length_schedule={name}"])
    msg = config_error(lambda: check(OmegaConf.merge(cfg, {"length_schedule": over})))
    assert needle in msg, msg
