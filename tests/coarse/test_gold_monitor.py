"""The overoptimization monitor: hand-computed math, the stop rule, preflight, trainer hooks.

Math: c2f_exp/coarse/gold_monitor.py; sources and the monitor: coarse/gold_rewards.py. The
end-to-end files (overoptimization.csv/.png) are checked in test_coarse.py's stage test. The
trainer tests use conftest's `micro` world and tests.helpers.coarse's `_trainer`.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from c2f_exp.coarse import gold_monitor as gm
from tests.helpers import check, compose_root, config_error
from tests.helpers.coarse import _trainer, coarse_cfg, coarse_conf


# ---- pure functions, by hand ----------------------------------------------------------------
def test_rankdata_averages_ties():
    assert gm.rankdata([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]
    assert gm.rankdata([3, 3, 3]) == [2.0, 2.0, 2.0]
    assert gm.rankdata([]) == []


def test_spearman_by_hand():
    assert gm.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert gm.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # no ties: 1 - 6 * sum d^2 / (n (n^2 - 1)) = 1 - 6 * 2 / 60
    assert gm.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # ties: ranks x = (1, 2.5, 2.5, 4), y = (1, 2, 3, 4): cov 4.5 / sqrt(4.5 * 5)
    assert gm.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert math.isnan(gm.spearman([1, 1, 1], [1, 2, 3]))  # constant: undefined
    assert math.isnan(gm.spearman([1], [2]))
    with pytest.raises(ValueError, match="equal lengths"):
        gm.spearman([1, 2], [1])


def test_spearman_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (40,), generator=g).tolist()  # many ties
    y = (torch.tensor(x) + torch.randn(40, generator=g) * 2).round().tolist()
    assert gm.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_moving_average_full_windows_only():
    assert gm.moving_average([1, 2, 3, 4], 2) == [1.5, 2.5, 3.5]
    assert gm.moving_average([1, 2, 3], 1) == [1, 2, 3]
    assert gm.moving_average([1, 2], 3) == []


@pytest.mark.parametrize(
    "gold, rm, window, min_drop, stop",
    [
        # G = (1.5, 2.5, 3, 2, .5): best 3 at j=2, now .5 (drop 2.5); R rose 2.5 -> 4.5
        ([1, 2, 3, 3, 1, 0], [0, 1, 2, 3, 4, 5], 2, 1.0, True),
        ([1, 2, 3, 3, 1, 0], [0, 1, 2, 3, 4, 5], 2, 3.0, False),  # drop 2.5 not > 3
        ([1, 2, 3, 3, 1, 0], [5, 4, 3, 2, 1, 0], 2, 1.0, False),  # the RM fell too
        ([1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5], 2, 0.0, False),  # gold at its best now
        ([3, 1], [0, 1], 2, 0.0, False),  # one full window: nothing to compare
        ([3, 1], [0, 1], 1, 1.0, True),  # G 3 -> 1 (drop 2), R 0 -> 1
        ([3, 1, 3, 0], [0, 1, 0, 2], 1, 2.5, True),  # best = the first 3; R 0 -> 2
    ],
)
def test_overoptimized_rule(gold, rm, window, min_drop, stop):
    assert gm.overoptimized(gold, rm, window, min_drop) is stop


def test_monitor_row_and_curve_summary_by_hand():
    gold = {"total": [2.0, 4.0], "correct": [1.0, 3.0]}
    row = gm.monitor_row(7, [1.0, 3.0], [0.5, 1.5], gold)
    assert tuple(row) == gm.COLUMNS
    assert (row["step"], row["kl"], row["rm_score"], row["gold_total"]) == (7, 2.0, 1.0, 3.0)
    assert row["spearman"] == pytest.approx(1.0) and row["n"] == 2 and row["gold_facts"] == 2.0
    assert math.isnan(row["gold_wrong"])  # a source without fact counts (a gold RM)
    rows = [
        {"step": 0, "rm_score": 0.0, "gold_total": 1.0, "spearman": 0.5},
        {"step": 5, "rm_score": 1.0, "gold_total": 3.0, "spearman": math.nan},
        {"step": 9, "rm_score": 2.0, "gold_total": 2.0, "spearman": 0.3},
    ]
    s = gm.curve_summary(rows, None)
    assert (s["gold_peak_step"], s["rm_peak_step"], s["gold_final_total"]) == (5, 9, 2.0)
    assert s["gold_rm_spearman_mean"] == pytest.approx(0.4) and s["gold_points"] == 3
    assert gm.curve_summary([], None) == {"gold_points": 0}


# ---- config and preflight -------------------------------------------------------------------
# The real 7B hub experiment, with no prompt data set: preflight's prompt-length check (hub
# downloads) has nothing to read, the rest of preflight runs as on a real run.
HUB_7B = ["+experiment=mistral_c2f", "data.hub.prompt_dataset=null"]


@pytest.mark.parametrize(
    "over, key",
    [
        ({"coarse": {"gold_every": -1}}, "coarse.gold_every"),
        ({"coarse": {"gold_source": "oracle"}}, "coarse.gold_source"),
        ({"coarse": {"gold_window": 0}}, "coarse.gold_window"),
        ({"coarse": {"gold_min_drop": -0.5}}, "coarse.gold_min_drop"),
    ],
)
def test_bad_gold_settings_are_one_line_errors(over, key):
    """The monitor's keys: checked with the config, before any stage (`check`)."""
    assert key in config_error(lambda: check(coarse_cfg(over)))


@pytest.mark.parametrize(
    "hub, over, key",
    [
        # a gold monitor outside the tiny world needs a second reward model
        (True, {"coarse": {"gold_every": 5}}, "coarse.gold_source"),
        (
            False,
            {"coarse": {"gold_every": 5, "gold_source": "reward_model"}},
            "coarse.gold_reward_model",
        ),
        (
            False,
            {"coarse": {"gold_source": "reward_model", "gold_reward_model": "/nope/rm"}},
            "coarse.gold_reward_model",
        ),
    ],
)
def test_gold_source_that_cannot_run_is_a_one_line_preflight_error(hub, over, key):
    """Whether the gold source can run here (data source, a findable model): preflight."""
    from c2f_exp.coarse.stage import CoarseStage

    conf = check(OmegaConf.merge(compose_root(HUB_7B), over) if hub else coarse_cfg(over))
    assert key in config_error(lambda: CoarseStage().preflight(conf))


def test_hub_run_with_the_7b_settings_asks_for_a_gold_reward_model(tmp_path):
    from c2f_exp.coarse.stage import CoarseStage
    from c2f_exp.core.errors import ConfigError

    cfg = compose_root(HUB_7B)
    CoarseStage().preflight(check(cfg))  # off by default: nothing asked
    cfg.coarse.gold_every = 50
    with pytest.raises(ConfigError, match=r"coarse\.gold_reward_model.*gold_every=0"):
        CoarseStage().preflight(check(cfg))
    rm = tmp_path / "rm"
    rm.mkdir()
    (rm / "config.json").write_text(json.dumps({}))
    cfg.coarse.gold_reward_model = str(rm)
    CoarseStage().preflight(check(cfg))  # any second reward model directory passes preflight


def test_registry_matches_the_schema_choices():
    """Every `coarse.gold_source` the schema accepts (its choice enum, documented in
    CoarseConf) has a registry entry, and nothing else does."""
    from c2f_exp.coarse.config import GoldSource
    from c2f_exp.coarse.gold_rewards import SOURCES

    assert set(SOURCES) == {"tinyworld_gold", "reward_model"} == set(GoldSource.values())


# ---- the tiny world's gold source -----------------------------------------------------------
def test_tinyworld_source_scores_decoded_rollouts_against_their_animal(tmp_path):
    from types import SimpleNamespace

    from c2f_exp.coarse.gold_rewards import SOURCES
    from c2f_exp.coarse.rollout import Rollout
    from c2f_exp.tinyworld import data
    from c2f_exp.tinyworld.scorer import GoldScorer
    from c2f_exp.tinyworld.tokenizer import train_tokenizer
    from c2f_exp.tinyworld.world import generate_world

    world = generate_world(0, 12, 0.3)
    tok = train_tokenizer(data.pretraining_corpus(world, 40, 1), world.vocabulary())
    (tmp_path / "data").mkdir()
    (tmp_path / "world.json").write_text(world.to_json())
    rows = data.ppo_prompts(world, world.entities)
    (tmp_path / "data" / "ppo_prompts.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )
    a, b = rows[0], rows[1]
    right = world.clause(a["entity"], "color") + " . " + world.clause(a["entity"], "color") + " ."
    answers = [right, world.clause(a["entity"], "diet") + " ."]  # the 2nd: about a, asked about b
    ids = [[*tok(t, add_special_tokens=False).input_ids, tok.eos_token_id] for t in answers]
    width = max(map(len, ids))
    resp = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x in ids])
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
    ro = Rollout(resp[:, :1], mask[:, :1], resp, mask, torch.tensor([False, False]), width)
    source = SOURCES["tinyworld_gold"].build(coarse_conf(), tok, SimpleNamespace(), tmp_path)
    out = source([a["prompt"], b["prompt"]], ro)
    scorer = GoldScorer(world)
    want = [scorer.score(answers[0], a["entity"]), scorer.score(answers[1], b["entity"])]
    assert out["total"].tolist() == [s.total() for s in want]
    assert out["correct"].tolist() == [1.0, 0.0] and out["repeats"].tolist() == [1.0, 0.0]
    assert out["total"][0] == 1 - 0.25  # one fact, once repeated


# ---- the hook in the trainer ----------------------------------------------------------------
def _falling_gold(start: float, fall: float):
    """Gold source whose batch total falls by `fall` per call; counts the calls."""
    calls = []

    def source(prompts, rollout):
        calls.append(1)
        return {"total": torch.full((len(prompts),), start - fall * (len(calls) - 1))}

    return source, calls


def _rising_rm():
    calls = []

    def reward_fn(prompts, ro):
        calls.append(1)
        return torch.full((len(prompts),), float(len(calls)))

    return reward_fn


def test_early_stop_when_gold_falls_while_rm_rises(micro, tmp_path):
    source, calls = _falling_gold(10.0, 2.0)
    over = {"steps": 10, "gold_every": 1, "early_stop_on_gold": True, "gold_window": 1}
    over.update(gold_min_drop=1.0, checkpoint_every=100, ppo_epochs=1)
    tr, _, logged = _trainer(micro, tmp_path, _rising_rm(), over, gold_source=source)
    state = tr.train()
    # gold 10 -> 8 (drop 2 > 1) while the RM went 1 -> 2: stop after iteration 1
    assert state.stopped_on_gold == 1 and state.step == 2 and len(calls) == 2
    assert [r["gold_total"] for r in state.gold] == [10.0, 8.0]
    assert logged[1][0]["gold/gold_total"] == 8.0 and logged[1][0]["gold/rm_score"] == 2.0


def test_monitor_off_by_flag_never_stops(micro, tmp_path):
    source, _ = _falling_gold(10.0, 2.0)
    over = {"steps": 4, "gold_every": 2, "gold_window": 1, "checkpoint_every": 100}
    over.update(ppo_epochs=1, batch_size=4, minibatch_size=4)
    tr, _, _ = _trainer(micro, tmp_path, _rising_rm(), over, gold_source=source)
    state = tr.train()
    assert state.step == 4 and state.stopped_on_gold is None
    assert [r["step"] for r in state.gold] == [0, 2, 3]  # every 2nd and the last


def test_gold_rows_survive_a_resume(micro, tmp_path):
    source, _ = _falling_gold(5.0, 0.0)
    over = {"steps": 3, "gold_every": 1, "checkpoint_every": 2, "ppo_epochs": 1}
    tr, _, _ = _trainer(micro, tmp_path, _rising_rm(), over, gold_source=source)
    tr.train()  # checkpoint after iteration 1 (ckpt-000002)
    again, _, _ = _trainer(micro, tmp_path, _rising_rm(), over, gold_source=source)
    state = again.train()  # resumes from ckpt-000002: rows 0, 1 come from the checkpoint
    assert state.resumed_from == 2
    assert [r["step"] for r in state.gold] == [0, 1, 2]
