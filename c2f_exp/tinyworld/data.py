"""Data sets derived from a `World`: corpus, instructions, preferences, prompts, two-turn set.

Every function is deterministic given the world and a seed.
"""

from __future__ import annotations

import random

from c2f_exp.tinyworld.scorer import GoldScorer
from c2f_exp.tinyworld.world import (
    ATTR_BY_NAME,
    ATTRIBUTES,
    HELDOUT_FRAME,
    MORE_TEMPLATE,
    PROMPT_TEMPLATE,
    TRAIN_FRAMES,
    WHY_TEMPLATE,
    World,
)

CAUSED = [a.name for a in ATTRIBUTES if a.cause]


def _sentence(
    world: World, e: str, attr: str, rng: random.Random, p_explain: float, frame: str | None = None
) -> str:
    frame = frame or rng.choice(TRAIN_FRAMES)
    if attr in CAUSED and rng.random() < p_explain:
        return frame.format(c=world.explained(e, attr))
    return frame.format(c=world.clause(e, attr))


def pretraining_corpus(
    world: World, n_docs: int, seed: int, p_prompt: float = 0.5, p_explain: float = 0.3
) -> list[str]:
    """Documents of 1-12 facts about one entity, some opened by the prompt line.

    The prompt line ("tell me about the X .") keeps the base on topic when it is later prompted
    the same way (docs/method.md §3 calibration).
    """
    rng = random.Random(seed)
    attrs = [a.name for a in ATTRIBUTES]
    docs = []
    for i in range(n_docs):
        e = world.entities[i % len(world.entities)]
        k = rng.randint(1, len(attrs))
        body = " ".join(_sentence(world, e, a, rng, p_explain) for a in rng.sample(attrs, k))
        docs.append(f"{PROMPT_TEMPLATE.format(e=e)} {body}" if rng.random() < p_prompt else body)
    rng.shuffle(docs)
    return docs


def _some_attributes(rng: random.Random, k_max: int = 3) -> list[str]:
    """1..k_max distinct attribute names."""
    return rng.sample([a.name for a in ATTRIBUTES], rng.randint(1, k_max))


def _facts(world: World, e: str, attrs: list[str]) -> str:
    """One true sentence per attribute: "<clause> . <clause> ."."""
    return " ".join(f"{world.clause(e, a)} ." for a in attrs)


def short_answer(world: World, e: str, rng: random.Random, k_max: int = 3) -> str:
    """A concise, correct answer of 1..k_max facts: the instruct model's style."""
    return _facts(world, e, _some_attributes(rng, k_max))


def instructions(world: World, entities: list[str], seed: int, per_entity: int = 6) -> list[dict]:
    """Short-answer instruction data: {"prompt", "completion", "entity", "kind"}."""
    rng = random.Random(seed)
    rows = []
    for e in entities:
        for j in range(per_entity):
            kind = ("about", "question", "why")[j % 3] if j else "about"
            if kind == "about":
                prompt, completion = PROMPT_TEMPLATE.format(e=e), short_answer(world, e, rng)
            elif kind == "question":
                a = rng.choice(ATTRIBUTES)
                prompt, completion = a.question.format(e=e), f"{world.clause(e, a.name)} ."
            else:
                attr = rng.choice(CAUSED)
                prompt = WHY_TEMPLATE.format(clause=world.clause(e, attr))
                completion = f"{world.explained(e, attr)} ."
            rows.append({"prompt": prompt, "completion": completion, "entity": e, "kind": kind})
    rng.shuffle(rows)
    return rows


def dialogues(world: World, entities: list[str], seed: int, per_entity: int = 4) -> list[dict]:
    """Two-turn SFT dialogues: a short first answer, then a second turn that builds on it.

    Rows are {"history": [turn 1, answer 1], "prompt": turn 2, "completion", "entity", "kind"}.
    Turn 2 alternates between "tell me more" (1-3 facts not stated in answer 1) and "why <fact>
    ?" (the fact's explained form), the two categories of the two-turn set: an instruct model
    that never saw a second turn is not a chat model (before: instruct turn 2 rated 1.5 of 10).
    """
    rng = random.Random(seed)
    attrs = [a.name for a in ATTRIBUTES]
    rows = []
    for e in entities:
        for j in range(per_entity):
            first = _some_attributes(rng)
            if j % 2 == 0:
                kind, prompt = "more", MORE_TEMPLATE.format(e=e)
                rest = [a for a in attrs if a not in first]
                more = rng.sample(rest, rng.randint(1, min(3, len(rest))))
                completion = _facts(world, e, more)
            else:
                attr = rng.choice(CAUSED)
                kind, prompt = "why", WHY_TEMPLATE.format(clause=world.clause(e, attr))
                completion = f"{world.explained(e, attr)} ."
            rows.append(
                {
                    "history": [PROMPT_TEMPLATE.format(e=e), _facts(world, e, first)],
                    "prompt": prompt,
                    "completion": completion,
                    "entity": e,
                    "kind": kind,
                }
            )
    rng.shuffle(rows)
    return rows


def _answer(
    world: World,
    e: str,
    rng: random.Random,
    n_true: int,
    n_wrong: int = 0,
    n_repeat: int = 0,
    p_explain: float = 0.0,
) -> str:
    attrs = rng.sample([a.name for a in ATTRIBUTES], min(len(ATTRIBUTES), n_true + n_wrong))
    sents = [_sentence(world, e, a, rng, p_explain, "{c} .") for a in attrs[:n_true]]
    sents += [f"{world.clause(e, a, world.wrong_value(e, a, rng))} ." for a in attrs[n_true:]]
    rng.shuffle(sents)
    for _ in range(n_repeat):
        if sents:
            sents.append(rng.choice(sents))
    return " ".join(sents)


def preference_pairs(
    world: World, entities: list[str], seed: int, per_entity: int = 4
) -> list[dict]:
    """Pairs where `chosen` beats `rejected` under the gold scorer by a clear margin.

    Chosen: more correct, distinct, explained facts. Rejected: fewer facts, wrong or repeated ones.
    """
    rng = random.Random(seed)
    scorer = GoldScorer(world)
    rows = []
    for e in entities:
        made = 0
        while made < per_entity:
            n = rng.randint(2, 8)
            chosen = _answer(world, e, rng, n, p_explain=rng.random())
            style = rng.choice(("fewer", "wrong", "repeat"))
            if style == "fewer":
                rejected = _answer(world, e, rng, rng.randint(0, n - 1))
            elif style == "wrong":
                w = rng.randint(1, 3)
                rejected = _answer(world, e, rng, max(0, n - w), n_wrong=w)
            else:
                rejected = _answer(world, e, rng, rng.randint(1, n), n_repeat=rng.randint(2, 6))
            sc, sr = scorer.score(chosen, e).total(), scorer.score(rejected, e).total()
            if sc - sr < 0.5 or not rejected:
                continue
            rows.append(
                {
                    "prompt": PROMPT_TEMPLATE.format(e=e),
                    "chosen": chosen,
                    "rejected": rejected,
                    "entity": e,
                    "style": style,
                    "gold_chosen": sc,
                    "gold_rejected": sr,
                }
            )
            made += 1
    return rows


def ppo_prompts(world: World, entities: list[str]) -> list[dict]:
    """PPO prompts: one open 'tell me about' prompt per entity."""
    return [{"prompt": PROMPT_TEMPLATE.format(e=e), "entity": e} for e in entities]


def fact_pairs(world: World, seed: int, heldout: bool = True) -> list[dict]:
    """True-vs-false statement pairs, one per (entity, attribute), in one frame.

    `heldout=True` uses the frame never seen in pretraining.
    """
    rng = random.Random(seed)
    frame = HELDOUT_FRAME if heldout else TRAIN_FRAMES[0]
    rows = []
    for e in world.entities:
        for a in ATTRIBUTES:
            rows.append(
                {
                    "entity": e,
                    "attribute": a.name,
                    "true": frame.format(c=world.clause(e, a.name)),
                    "false": frame.format(
                        c=world.clause(e, a.name, world.wrong_value(e, a.name, rng))
                    ),
                }
            )
    return rows


def two_turn_questions(world: World, entities: list[str], seed: int) -> list[dict]:
    """MT-Bench-style two-turn questions; the category says what turn 2 asks for."""
    rng = random.Random(seed)
    rows = []
    for i, e in enumerate(entities):
        attr = rng.choice(CAUSED)
        turn2 = (
            MORE_TEMPLATE.format(e=e)
            if i % 2 == 0
            else WHY_TEMPLATE.format(clause=world.clause(e, attr))
        )
        rows.append(
            {
                "question_id": i + 1,
                "category": "more" if i % 2 == 0 else "why",
                "entity": e,
                "turns": [PROMPT_TEMPLATE.format(e=e), turn2],
                "why_attribute": None if i % 2 == 0 else attr,
            }
        )
    return rows


def multiple_choice(world: World, entities: list[str]) -> list[dict]:
    """lm-eval multiple-choice items: question, choices (the attribute's values), gold index."""
    rows = []
    for e in entities:
        for a in ATTRIBUTES:
            if a.relation:
                continue
            rows.append(
                {
                    "question": ATTR_BY_NAME[a.name].question.format(e=e),
                    "choices": list(a.values),
                    "gold": a.values.index(world.value(e, a.name)),
                    "entity": e,
                    "attribute": a.name,
                }
            )
    return rows
