"""Process reward model, defect-isolating pairs, grown architectures, rounds, bad input."""

from __future__ import annotations

import random

import pytest
import torch

from c2f_exp.core.errors import ConfigError
from c2f_exp.reward import defects as dfx
from c2f_exp.reward import model as rmod
from c2f_exp.reward.config import RewardArchConf, RewardTrainConf
from c2f_exp.reward.process import label, segment_loss, train_process
from c2f_exp.tinyworld.scorer import GoldScorer
from c2f_exp.tinyworld.world import World
from tests.helpers import check
from tests.helpers.reward import MICRO_ARCH, SMALL, _cfg, _compose, _micro_world, _run


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    return _micro_world(tmp_path_factory.mktemp("prep") / "p")


@pytest.fixture(scope="module")
def world(micro):
    w = World.load(micro / "world.json")
    return w, GoldScorer(w)


def _answer(w: World, e: str, attrs: list[str]) -> str:
    return " ".join(f"{w.clause(e, a)} ." for a in attrs)


def test_sentence_labels_sum_to_the_gold_total(micro, world):
    from transformers import AutoTokenizer

    w, scorer = world
    tok = AutoTokenizer.from_pretrained(micro / "base")
    e = w.entities[0]
    bad = w.clause(e, "diet", w.wrong_value(e, "diet", random.Random(0)))
    text = f"{w.clause(e, 'color')} . {bad} . {w.clause(e, 'color')} . {w.explained(e, 'habitat')}"
    lab = label(tok, scorer, f"tell me about the {e} .", text, e)
    # prompt, then: true fact +1, wrong -1, repeat -0.25, explained fact +1.5 (no final '.':
    # the fragment ends at the EOS)
    assert lab.targets == pytest.approx([0.0, 1.0, -1.0, -0.25, 1.5])
    assert sum(lab.targets) == pytest.approx(scorer.score(text, e).total())
    n_prompt = len(tok(f"tell me about the {e} .").input_ids) + 1  # + BOS
    assert lab.seg[:n_prompt] == [0] * n_prompt and lab.seg[-1] == 4
    assert len(lab.seg) == len(lab.ids) and lab.seg == sorted(lab.seg)


def test_segment_loss_by_hand():
    r = torch.tensor([[0.5, 1.0, 2.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    seg = torch.tensor([[0, 1, 1, 0]])
    tgt, tmask = torch.tensor([[0.0, 2.0]]), torch.ones(1, 2)
    # segment 0: 0.5 (the pad's 9 is masked) vs 0; segment 1: 3 vs 2 -> (0.25 + 1) / 2
    assert segment_loss(r, mask, seg, tgt, tmask).item() == pytest.approx(0.625)


def test_process_training_learns_to_count_facts(micro, world):
    w, scorer = world
    model, tok = rmod.init_reward_model(str(micro / "base"), "plain", 0, pooling="sum")
    attrs = [a.name for a in w.attributes]
    rng = random.Random(0)
    rows, eval_sets = [], []
    for e in w.entities:
        for n in (1, 3, 5):
            text = _answer(w, e, rng.sample(attrs, n))
            rows.append(label(tok, scorer, f"tell me about the {e} .", text, e))
            eval_sets.append((f"tell me about the {e} .", text, n))
    tcfg = RewardTrainConf(epochs=30, batch_size=8, lr=3e-3)  # typed, as the stage hands it on
    hist = train_process(model, rows, tok.pad_token_id, tcfg, 0)
    assert hist[-1]["loss"] < 0.5 * hist[0]["loss"]
    ps, ts, ns = zip(*eval_sets, strict=True)
    scores = rmod.score_texts(model, tok, list(ps), list(ts))
    corr = torch.corrcoef(torch.stack([scores, torch.tensor(ns, dtype=torch.float)]))[0, 1]
    assert corr > 0.8  # the summed score tracks the number of facts


@pytest.mark.parametrize("kind", dfx.DEFECTS)
def test_each_defect_pair_differs_by_that_defect_only(world, kind):
    w, scorer = world
    e = w.entities[1]
    text = _answer(w, e, ["color", "habitat", "diet", "legs"])
    better, worse = dfx.defect_pair(text, e, kind, scorer, random.Random(3))
    sb, sw = scorer.score(better, e), scorer.score(worse, e)
    assert sb.total() > sw.total()
    field = {"wrong": "wrong", "repeat": "repeats", "explanation": "explained"}.get(kind)
    if field:
        assert abs(getattr(sb, field) - getattr(sw, field)) == 1
    if kind == "off_topic":
        assert sw.off_topic == sb.off_topic + 1 and sw.wrong == sb.wrong == 0
    if kind in ("wrong", "off_topic"):  # the same sentences, one of them changed
        assert len(dfx.sentences(better)) == len(dfx.sentences(worse))
    assert (better if kind != "explanation" else worse) == text


def test_defect_pairs_come_in_equal_shares_and_agreement_by_hand(world):
    w, scorer = world
    texts = [_answer(w, e, ["color", "diet", "speed"]) for e in w.entities]
    pairs = dfx.defect_pairs(texts, list(w.entities), scorer, 0)
    assert len({len(v) for v in pairs.values()}) == 1 and len(pairs["wrong"]) > 0
    assert dfx.defect_pairs(texts, ["nobody"] * len(texts), scorer, 0)["wrong"] == []
    rows = {"wrong": [(0, "a", "bb")], "repeat": [(0, "aa", "b"), (1, "a", "b")], "off_topic": []}
    m = dfx.defect_agreement(lambda ps, ts: [len(t) for t in ts], ["p", "q"], rows)
    assert m["defect_wrong_agreement"] == 0.0 and m["defect_repeat_agreement"] == 0.5
    assert m["defect_off_topic_agreement"] is None and m["defect_off_topic_pairs"] == 0


def test_a_deeper_reward_model_starts_as_the_init_model(micro):
    last, tok = rmod.init_reward_model(str(micro / "base"), "plain", 0)
    arch = RewardArchConf(**{**_micro_arch(), "num_layers": 4})  # typed, as the stage has it
    deep, _ = rmod.init_reward_model(
        str(micro / "base"), "plain", 0, arch=RewardArchConf.overrides(arch)
    )
    assert deep.config.num_hidden_layers == 4 == 2 * last.config.num_hidden_layers
    ids = [rmod.encode(tok, "tell me about the x .", "the x moves slowly .", "plain")]
    deep.score.load_state_dict(last.score.state_dict())  # same head: same function
    torch.testing.assert_close(
        rmod.score_ids(deep, ids, tok.pad_token_id), rmod.score_ids(last, ids, tok.pad_token_id)
    )


def _micro_arch() -> dict:
    a = MICRO_ARCH
    return {
        "hidden_size": a.hidden_size,
        "intermediate_size": a.intermediate_size,
        "num_layers": a.num_layers,
        "num_heads": a.num_heads,
        "num_kv_heads": a.num_kv_heads,
        "max_position_embeddings": 512,
    }


def test_two_rounds_and_a_grown_model_train_and_feed_the_critic(micro, tmp_path):
    from c2f_exp.coarse.critic import load_critic

    arch = {**_micro_arch(), "num_layers": 3}
    metrics, art = _run(_cfg(**SMALL, rounds=2, arch=arch), tmp_path, micro)
    assert metrics["trained"] and metrics["n_params"] > 0
    for k in ("gold_agreement", "ppo_prompts_gold_agreement"):
        assert 0 <= metrics[k] <= 1, k
    assert {f"defect_{k}_pairs" for k in dfx.DEFECTS} <= set(metrics)
    critic = load_critic("reward", str(art / "model"), str(micro / "base"), torch.float32)
    ids = torch.tensor([[1, 5, 6, 7, 2]])
    pos = torch.arange(5)[None]
    assert critic(ids, torch.ones_like(ids), pos, 3).shape == (1, 3)
    assert critic.model.config.num_hidden_layers == 3


@pytest.mark.parametrize(
    "over, needle",
    [
        ({"rounds": 0}, "reward.rounds must be > 0"),
        (
            {
                "rounds": 2,
                "onpolicy": {"enabled": False},
                "objective": "process",
            },
            "reward.rounds",
        ),
        ({"format": "chat", "objective": "process"}, "reward.format"),
        ({"arch": {"hidden_size": 130}}, "reward.arch.hidden_size"),
        ({"arch": {"num_kv_heads": 3}}, "reward.arch.num_kv_heads"),
        ({"arch": {"num_layers": 0}}, "reward.arch.num_layers"),
        ({"arch": {"max_position_embeddings": 128}}, "reward.arch.max_position_embeddings"),
        (
            {
                "source": "hub",
                "dataset": "x/y",
                "gold": {"enabled": False},
                "onpolicy": {"enabled": False},
                "objective": "process",
            },
            "reward.objective",
        ),
    ],
)
def test_bad_recipe_values_are_named_before_any_stage(over, needle):
    """The group's rules and those against model.arch: `check`, as the pipeline runs them."""
    with pytest.raises(ConfigError) as e:
        check(_compose(**over))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_bad_objective_is_named_at_composition():
    """A choice (enum) fails where the value is merged in, as on the command line."""
    from c2f_exp.cli_errors import one_line

    with pytest.raises(Exception) as e:
        _compose(objective="dpo")
    msg = one_line(e.value)
    assert msg is not None and msg.startswith("reward.objective must be one of")
