"""The `coarse` stage: config checks, reward shaping, bad input, PPO learning, artifacts.

Tiny models are built in-process (hidden 32, 2 layers, a 12-entity world). This module is also
the driver the resume and ZeRO-2 tests run in subprocesses:
`python tests/coarse/test_coarse.py CFG.yaml UPSTREAM.json OUT WORK RUN [STEP_DELAY_S]`.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the driver: `tests` importable
from tests.helpers import CONF, check, compose_root, config_error
from tests.helpers.coarse import _trainer, coarse_cfg, coarse_conf, load_cfg, make_ctx, read_trace


def drive(argv: list[str]) -> None:
    """Subprocess entry: run CoarseStage on a saved config (optionally slowed per step)."""
    import logging

    from c2f_exp.coarse.stage import CoarseStage

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    cfg_path, up_path, out, work, run = argv[:5]
    delay = float(argv[5]) if len(argv) > 5 else 0.0
    if delay:  # test hook: slow every step so a kill lands mid-run
        import c2f_exp.coarse.experience as exp

        make = exp.make_reward_fn

        def slow_make(*a, **k):
            fn = make(*a, **k)
            return lambda p, r: (time.sleep(delay), fn(p, r))[1]

        exp.make_reward_fn = slow_make
    h = make_ctx(load_cfg(cfg_path), json.loads(Path(up_path).read_text()), Path(run), Path(work))
    Path(out).mkdir(parents=True, exist_ok=True)
    metrics = CoarseStage().run(h.ctx, Path(out))
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print("METRICS " + json.dumps(metrics, default=str), flush=True)


# ---- config and bad input -------------------------------------------------------------------
@pytest.mark.parametrize(
    "over, key",
    [
        ({"length_schedule": {"l_min": 64, "l_max": 16}}, "length_schedule.l_min"),
        ({"length_schedule": {"rate": 0.0}}, "length_schedule.rate"),
        ({"length_schedule": {"kappa": -1.0}}, "length_schedule.kappa"),
        ({"coarse": {"minibatch_size": 3}}, "coarse.minibatch_size"),
        ({"coarse": {"critic_init": "instruct"}}, "coarse.critic_init"),
        ({"coarse": {"lr": 0.0}}, "coarse.lr"),
        ({"coarse": {"kl_controller": "adaptive"}}, "coarse.kl_target"),
        ({"coarse": {"prompt_prefix": "{eos} "}}, "coarse.prompt_prefix"),
        ({"length_schedule": {"l_max": 400}}, "length_schedule.l_max"),
        ({"distributed": {"backend": "deepspeed", "zero_stage": 5}}, "distributed.zero_stage"),
    ],
)
def test_validate_names_bad_key(over, key):
    check(coarse_cfg())  # the defaults pass
    assert key in config_error(lambda: check(coarse_cfg(over)))


@pytest.mark.parametrize("name", ["tinyworld", "mistral_7b"])
def test_coarse_group_files_compose_and_validate(name):
    conf = check(compose_root([f"coarse={name}"]))  # unknown keys and bad values fail
    assert conf.coarse.name == name
    if name == "mistral_7b":
        assert conf.coarse.dtype == "bfloat16" and conf.coarse.gradient_checkpointing


@pytest.mark.parametrize("name", ["none", "ddp", "zero2", "zero3"])
def test_distributed_group_files(name):
    d = coarse_conf(distributed=name).distributed
    assert d.name == name
    if d.backend == "deepspeed":
        ds = json.loads((CONF / "distributed" / d.deepspeed_config).read_text())
        assert ds["zero_optimization"]["stage"] == d.zero_stage == int(name[-1])


def test_preflight_needs_a_reward_model():
    from c2f_exp.coarse.stage import CoarseStage
    from c2f_exp.core.errors import ConfigError

    cfg = coarse_conf({"stages": ["prepare", "coarse"]})
    with pytest.raises(ConfigError, match="reward model"):
        CoarseStage().preflight(cfg)
    with pytest.raises(ConfigError, match=r"coarse\.reward_model"):
        CoarseStage().preflight(coarse_conf({"coarse": {"reward_model": "/nope/rm"}}))


def test_mismatched_reward_vocabulary_is_refused(micro, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from c2f_exp.coarse.stage import CoarseStage
    from c2f_exp.core.errors import ConfigError
    from c2f_exp.tinyworld.tokenizer import train_tokenizer

    tok = train_tokenizer(["the blick is red ."], ["zorp"])
    rm = AutoModelForSequenceClassification.from_pretrained(
        Path(micro["prepare"]["path"]) / "base", num_labels=1
    )
    rm.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    h = make_ctx(
        coarse_cfg({"coarse": {"reward_model": str(tmp_path / "rm")}}),
        micro,
        tmp_path / "run",
        tmp_path / "work",
    )
    with pytest.raises(ConfigError, match="vocabulary"):
        CoarseStage().run(h.ctx, tmp_path / "out")


def test_empty_prompt_set_is_a_named_error(micro, tmp_path):
    import shutil

    from c2f_exp.coarse.experience import EmptyPromptSetError
    from c2f_exp.coarse.stage import CoarseStage

    prep = tmp_path / "prep"
    shutil.copytree(micro["prepare"]["path"], prep)
    (prep / "data" / "ppo_prompts.jsonl").write_text("")
    h = make_ctx(
        coarse_cfg(),
        {**micro, "prepare": {"path": str(prep)}},
        tmp_path / "run",
        tmp_path / "work",
    )
    with pytest.raises(EmptyPromptSetError, match=r"ppo_prompts\.jsonl is empty"):
        CoarseStage().run(h.ctx, tmp_path / "out")


# ---- reward shaping -------------------------------------------------------------------------
def _rollout(lengths: list[int], limit: int):
    from c2f_exp.coarse.rollout import Rollout

    t = max(lengths)
    mask = torch.tensor([[1] * n + [0] * (t - n) for n in lengths])
    return Rollout(
        torch.ones(len(lengths), 2, dtype=torch.long),
        torch.ones(len(lengths), 2),
        torch.ones_like(mask),
        mask,
        torch.tensor([n >= limit for n in lengths]),
        limit,
    )


def test_shape_rewards_by_hand():
    from c2f_exp.coarse.experience import shape_rewards

    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, -0.5, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    r = shape_rewards(torch.tensor([2.0, -1.0]), kl, mask, kl_coef=0.5)
    expected = torch.tensor([[-0.05, -0.1, -0.15 + 2.0], [-0.25, 0.25 - 1.0, 0.0]])
    assert torch.allclose(r, expected)


def test_length_penalties_by_hand():
    from c2f_exp.coarse.experience import sequence_rewards

    ro = _rollout([3, 8, 10], limit=10)  # only the last hit the limit
    scores = torch.tensor([1.0, 1.0, 1.0])
    assert torch.equal(sequence_rewards(scores, ro, None, None), scores)
    assert torch.allclose(sequence_rewards(scores, ro, 0.5, None), torch.tensor([1.0, 1.0, 0.5]))
    # DAPO soft punishment, window 4 at limit 10: lengths <= 6 free, then -(n-6)/4
    out = sequence_rewards(scores, ro, None, 4)
    assert torch.allclose(out, torch.tensor([1.0, 1.0 - 2 / 4, 1.0 - 4 / 4]))


def test_nonfinite_rewards_are_counted_then_stop():
    from c2f_exp.coarse.experience import NonFiniteRewardError, check_scores

    assert check_scores(torch.tensor([1.0, 2.0]), 0, 2, step=0)
    assert not check_scores(torch.tensor([1.0, math.nan]), 0, 2, step=1)
    assert not check_scores(torch.tensor([math.inf]), 1, 2, step=2)
    with pytest.raises(NonFiniteRewardError, match=r"coarse\.max_bad_batches=2"):
        check_scores(torch.tensor([math.nan]), 2, 2, step=3)


# ---- the trainer on toy rewards (tests.helpers.coarse._trainer) -------------------------
def test_ppo_raises_a_toy_reward(micro, tmp_path):
    """Reward = share of response tokens with an even id (~0.5 at start): PPO must raise it."""

    def reward_fn(prompts, ro):
        even = ((ro.response_ids % 2 == 0) & ro.response_mask.bool()).sum(1).float()
        return even / ro.response_mask.sum(1)

    tr, _, logged = _trainer(
        micro,
        tmp_path,
        reward_fn,
        {
            "steps": 12,
            "batch_size": 16,
            "minibatch_size": 8,
            "lr": 6e-3,
            "critic_lr": 3e-3,
            "kl_coef": 0.0,
            "checkpoint_every": 100,
        },
    )
    state = tr.train()
    rewards = [r["reward"] for r in state.trace]
    assert len(rewards) == 12 and [s for _, s in logged] == list(range(12))
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.15, rewards  # seen: 0.54 -> 0.86
    for key in (
        "reward",
        "kl",
        "value",
        "limit",
        "gate",
        "truncation_rate",
        "entropy",
        "clipfrac",
        "mean_response_length",
        "tokens_per_s",
    ):
        assert key in logged[0][0]
    assert math.isfinite(logged[-1][0]["pg_loss"]) and logged[-1][0]["clipfrac"] >= 0


def test_nan_reward_batches_are_skipped_and_counted(micro, tmp_path):
    from c2f_exp.coarse.experience import NonFiniteRewardError

    calls = []

    def reward_fn(prompts, ro):
        calls.append(1)
        bad = len(calls) in (2, 3)
        return torch.full((len(prompts),), math.nan if bad else 0.5)

    tr, _, logged = _trainer(micro, tmp_path / "a", reward_fn, {"steps": 4, "max_bad_batches": 2})
    state = tr.train()
    assert state.bad_batches == 2 and [r["step"] for r in state.trace] == [0, 3]
    assert logged[-1][0]["bad_batches"] == 2
    calls.clear()
    tr, _, _ = _trainer(micro, tmp_path / "b", reward_fn, {"steps": 4, "max_bad_batches": 1})
    with pytest.raises(NonFiniteRewardError, match=r"max_bad_batches=1"):
        tr.train()


def test_token_budget_ends_the_run_at_the_first_step_past_it(micro, tmp_path):
    def reward_fn(prompts, ro):
        return torch.zeros(len(prompts))

    budget = 40  # 8 rollouts of at most 8 tokens (l_min) per step: 2-5 steps, never 50
    tr, _, _ = _trainer(micro, tmp_path, reward_fn, {"steps": 50, "token_budget": budget})
    state = tr.train()
    totals = [r["tokens_total"] for r in state.trace]
    assert totals[-1] >= budget and all(t < budget for t in totals[:-1])
    assert state.step == len(state.trace) < 50


def test_critic_from_base_starts_at_zero_and_from_reward_does_not(micro, tmp_path):
    seen = {}
    for init in ("base", "reward"):
        tr, _, _ = _trainer(
            micro, tmp_path / init, lambda p, ro: torch.zeros(len(p)), {"steps": 1}, critic=init
        )
        seen[init] = tr.train().trace[0]["value"]
    assert seen["base"] == 0.0 and seen["reward"] != 0.0


# ---- the stage end to end -------------------------------------------------------------------
def test_stage_writes_actor_trace_and_plot(micro, tmp_path):
    from transformers import AutoModelForCausalLM

    from c2f_exp.coarse.stage import CoarseStage

    cfg = coarse_cfg(
        {
            "coarse": {"steps": 3},
            "length_schedule": {
                "l_min": 8,
                "l_max": 24,
                "rate": 1.0,
                "trunc_min": 0.0,
                "gate_on": "advantage",
            },
        }
    )
    h = make_ctx(cfg, micro, tmp_path / "run", tmp_path / "work")
    out = tmp_path / "out"
    out.mkdir()
    metrics = CoarseStage().run(h.ctx, out)
    assert (out / "actor" / "model.safetensors").is_file()
    assert (out / "actor" / "tokenizer.json").is_file() and (out / "length_trace.png").is_file()
    trace = read_trace(out)
    assert [int(r["step"]) for r in trace] == [0, 1, 2]
    assert {
        "step",
        "limit",
        "reward",
        "value",
        "gate",
        "truncation_rate",
        "mean_response_length",
        "advantage0",
    } <= set(trace[0])
    assert all(math.isfinite(float(r["advantage0"])) and 0 <= float(r["gate"]) <= 1 for r in trace)
    limits = [int(r["limit"]) for r in trace]
    assert limits[0] == 8 and limits == sorted(limits) and limits[-1] <= 24
    actor = AutoModelForCausalLM.from_pretrained(out / "actor")
    base = AutoModelForCausalLM.from_pretrained(Path(micro["prepare"]["path"]) / "base")
    assert any(
        not torch.equal(a, b)
        for a, b in zip(actor.state_dict().values(), base.state_dict().values(), strict=True)
    )
    assert metrics["resumed_from_step"] is None and metrics["bad_batches"] == 0
    assert {"actor/heldout_facts_per_answer", "base/heldout_facts_per_answer"} <= set(metrics)
    lines = (tmp_path / "run" / "coarse" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines[:3]] == [0, 1, 2]
    assert list((tmp_path / "work").glob("ckpt-*")), "checkpoint every 2 steps"
    _check_overoptimization_files(out, metrics, [json.loads(x) for x in lines[:3]])


def _check_overoptimization_files(out: Path, metrics: dict, logged: list[dict]) -> None:
    """The default gold monitor (every 5 iterations and the last) on a 3-iteration run."""
    from c2f_exp.coarse.gold_monitor import COLUMNS

    assert (out / "overoptimization.png").is_file()
    with open(out / "overoptimization.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == COLUMNS and [int(r["step"]) for r in rows] == [0, 2]
    assert all(math.isfinite(float(r[k])) for r in rows for k in ("kl", "rm_score", "gold_total"))
    assert [int(r["n"]) for r in rows] == [8, 8]  # every rollout of the batch was scored
    assert metrics["gold_points"] == 2 and metrics["stopped_on_gold_at"] is None
    assert "gold/gold_total" in logged[0] and "gold/gold_total" not in logged[1]
    assert not any(k.startswith("gold") for k in read_trace(out)[0])  # §5 trace unchanged


if __name__ == "__main__":
    drive(sys.argv[1:])


def test_coarse_seed_defaults_to_the_run_seed_and_keys_the_artifact(conf):
    from c2f_exp.coarse.stage import CoarseStage, rl_seed

    st = CoarseStage()
    default, same = conf([]), conf(["coarse.seed=0"])
    other, run1 = conf(["coarse.seed=1"]), conf(["seed=1"])
    assert rl_seed(default) == 0 and rl_seed(other) == 1 and rl_seed(run1) == 1
    assert st.config_subtree(default) == st.config_subtree(same)  # same RL seed: reused
    assert st.config_subtree(default) != st.config_subtree(other)
