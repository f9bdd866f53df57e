"""Tiny world: determinism, the gold scorer on hand-written answers, tokenizer round trip."""

from __future__ import annotations

import json

import pytest

from c2f_exp.tinyworld import data
from c2f_exp.tinyworld.scorer import GoldScorer
from c2f_exp.tinyworld.tokenizer import train_tokenizer
from c2f_exp.tinyworld.world import ATTRIBUTES, World, generate_world


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(seed=3, n_entities=20)


def _all_data(w: World, seed: int) -> str:
    parts = [
        w.to_json(),
        data.pretraining_corpus(w, 50, seed),
        data.instructions(w, w.train_entities, seed),
        data.dialogues(w, w.train_entities, seed, 2),
        data.ppo_prompts(w, w.entities),
        data.preference_pairs(w, w.train_entities, seed, 2),
        data.fact_pairs(w, seed),
        data.two_turn_questions(w, w.entities, seed),
        data.multiple_choice(w, w.heldout_entities),
    ]
    return json.dumps(parts, sort_keys=True)


def test_same_seed_same_data():
    a, b = generate_world(7, 30), generate_world(7, 30)
    assert _all_data(a, 1) == _all_data(b, 1)


def test_other_seed_other_world():
    assert generate_world(7, 30).facts != generate_world(8, 30).facts


def test_world_shape(world):
    assert len(world.entities) == len(set(world.entities)) == 20
    assert len(ATTRIBUTES) >= 12
    assert set(world.train_entities).isdisjoint(world.heldout_entities)
    assert sorted(world.train_entities + world.heldout_entities) == sorted(world.entities)
    for e, row in world.facts.items():
        assert row["enemy"] != e and row["friend"] != e and row["enemy"] != row["friend"]


def test_world_roundtrip(tmp_path, world):
    (tmp_path / "w.json").write_text(world.to_json())
    assert World.load(tmp_path / "w.json") == world


def test_scorer_correct_answer(world):
    e = world.entities[0]
    s = GoldScorer(world).score(
        f"{world.clause(e, 'color')} . it is known that {world.clause(e, 'diet')} .", e
    )
    assert (s.correct, s.wrong, s.repeats, s.unparsed) == (2, 0, 0, 0)


def test_scorer_wrong_fact(world):
    e = world.entities[0]
    true = world.value(e, "color")
    false = next(v for v in ATTRIBUTES[0].values if v != true)
    s = GoldScorer(world).score(
        f"the {e} is colored {false} . the {e} walks on {world.value(e, 'legs')} legs .", e
    )
    assert (s.correct, s.wrong) == (1, 1)


def test_scorer_repeated_facts(world):
    e = world.entities[1]
    fact = f"{world.clause(e, 'habitat')} ."
    s = GoldScorer(world).score(" ".join([fact] * 4), e)
    assert (s.correct, s.repeats, s.claims) == (1, 3, 4)
    assert s.repetition_rate == pytest.approx(0.75)


def test_scorer_explanations_and_off_topic(world):
    e, other = world.entities[2], world.entities[3]
    right = world.explained(e, "habitat")  # habitat is explained by covering
    wrong_cause = f"{world.clause(e, 'habitat')} because {world.clause(e, 'color')}"
    s = GoldScorer(world).score(f"{right} . {wrong_cause} . {world.clause(other, 'size')} .", e)
    assert s.explained == 1 and s.correct == 1 and s.repeats == 1 and s.off_topic == 1


def test_scorer_garbage(world):
    s = GoldScorer(world).score("blah blah . the the .", world.entities[0])
    assert (s.correct, s.unparsed, s.sentences) == (0, 2, 2)
    assert s.total() < 0


def test_preference_pairs_ordered_by_gold(world):
    sc = GoldScorer(world)
    for p in data.preference_pairs(world, world.entities, 0, 3):
        assert (
            sc.score(p["chosen"], p["entity"]).total()
            > sc.score(p["rejected"], p["entity"]).total()
        )


def test_tokenizer_round_trip(world):
    docs = data.pretraining_corpus(world, 40, 0)
    tok = train_tokenizer(docs, world.vocabulary())
    for d in docs[:10]:
        ids = tok(d, add_special_tokens=False).input_ids
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == d
    chat = tok.apply_chat_template(
        [
            {"role": "user", "content": "tell me about the x ."},
            {"role": "assistant", "content": "ok ."},
        ],
        tokenize=False,
    )
    assert chat.startswith(tok.bos_token) and chat.rstrip().endswith(tok.eos_token)


def test_vocabulary_covers_every_text(world):
    tok = train_tokenizer([], world.vocabulary())
    texts = [r["completion"] for r in data.instructions(world, world.entities, 0)]
    texts += [q for r in data.two_turn_questions(world, world.entities, 0) for q in r["turns"]]
    for t in texts:
        assert tok.unk_token_id not in tok(t, add_special_tokens=False).input_ids, t


def test_answer_quality_reports_gold_total_and_explanations(world, monkeypatch):
    """answer_quality averages the scorer's counts; the gold total is what the RM approximates."""
    from c2f_exp.tinyworld import quality

    e, f = world.entities[2], world.entities[4]
    answers = {  # prompt -> (answer, EOS seen, new tokens)
        "a": (f"{world.explained(e, 'habitat')} . {world.clause(e, 'color')} .", True, 20),
        "b": (f"{world.clause(f, 'size')} . {world.clause(f, 'size')} .", False, 30),
    }
    monkeypatch.setattr(
        quality, "generate", lambda m, t, prompts, *a: [answers[p] for p in prompts]
    )
    rows = [{"prompt": "a", "entity": e}, {"prompt": "b", "entity": f}]
    q = quality.answer_quality(None, None, GoldScorer(world), rows, 32, chat=False)
    # a: 2 correct + 1 explained (+0.5) = 2.5; b: 1 correct, 1 repeat (-0.25) = 0.75
    assert q["facts_per_answer"] == pytest.approx(1.5)
    assert q["explained_per_answer"] == pytest.approx(0.5)
    assert q["gold_total_per_answer"] == pytest.approx((2.5 + 0.75) / 2)
    assert (q["eos_rate"], q["mean_new_tokens"]) == (0.5, 25)


def test_dialogues_build_on_the_first_answer(world):
    """Turn 2 of an SFT dialogue adds facts answer 1 did not state, or states the asked cause."""
    from c2f_exp.tinyworld.world import MORE_TEMPLATE, PROMPT_TEMPLATE

    scorer, cause = GoldScorer(world), {a.name: a.cause for a in ATTRIBUTES}
    rows = data.dialogues(world, world.train_entities, 5, per_entity=4)
    assert len(rows) == 4 * len(world.train_entities)
    assert {r["entity"] for r in rows} == set(world.train_entities)
    assert {r["kind"] for r in rows} == {"more", "why"}
    for r in rows:
        e, (turn1, answer1) = r["entity"], r["history"]
        assert turn1 == PROMPT_TEMPLATE.format(e=e)
        s1 = scorer.score(answer1, e)
        assert 1 <= s1.correct <= 3 and s1.wrong == s1.repeats == 0
        if r["kind"] == "more":
            assert r["prompt"] == MORE_TEMPLATE.format(e=e)
            both = scorer.score(f"{answer1} {r['completion']}", e)
            # every fact of turn 2 is new and true: the joint answer has no repeat, no error
            assert both.correct > s1.correct and both.wrong == both.repeats == 0
        else:
            asked = [a for a in cause if cause[a] and r["prompt"] == f"why {world.clause(e, a)} ?"]
            assert len(asked) == 1
            assert r["completion"] == f"{world.explained(e, asked[0])} ."
            assert world.clause(e, cause[asked[0]]) in r["completion"]


def test_sft_conversation_puts_the_history_first(world):
    """A dialogue row becomes user/assistant/user turns, rendered by the chat template."""
    from c2f_exp.tinyworld.training import conversation

    tok = train_tokenizer(["tell me about the owl . it is red ."], world.vocabulary())
    row = {"history": ["tell me about the owl .", "it is red ."], "prompt": "why ?"}
    row["completion"] = "x"
    conv = conversation(row)
    assert [m["role"] for m in conv["prompt"]] == ["user", "assistant", "user"]
    text = tok.apply_chat_template(conv["prompt"], tokenize=False, add_generation_prompt=True)
    want = "<s> [INST] tell me about the owl . [/INST] it is red . </s> [INST] why ? [/INST]"
    assert text == want
    single = conversation({"prompt": "tell me about the owl .", "completion": "it is red ."})
    assert single["prompt"] == [{"role": "user", "content": "tell me about the owl ."}]
    assert single["completion"] == [{"role": "assistant", "content": "it is red ."}]
