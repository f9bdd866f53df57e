"""The tiny world: a seeded knowledge domain of made-up animals (docs/method.md §3).

Each entity is one made-up word with 12 attributes. Every attribute has its own wording (so
attributes are never confused by a shared verb) and single-token values; two attributes are
relations to other entities. Four attributes can be *explained* by another attribute of the same
entity ("... because the X is covered in fur"), which the gold scorer credits: a complete,
analytical answer needs 12 facts plus explanations (well over 100 tokens), so the rollout length
limit binds.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Attribute:
    """One attribute: `phrase` joins entity and value; `suffix` follows the value."""

    name: str
    phrase: str
    values: tuple[str, ...] = ()  # empty: the value is another entity (a relation)
    suffix: str = ""
    question: str = ""  # instruction-style question, "{e}" is the entity
    cause: str | None = None  # attribute that explains this one ("because ...")

    @property
    def relation(self) -> bool:
        return not self.values

    def render(self, entity: str, value: str) -> str:
        """Core clause without a frame: 'the blick eats seeds'."""
        obj = f"the {value}" if self.relation else value
        text = f"the {entity} {self.phrase} {obj}"
        return f"{text} {self.suffix}" if self.suffix else text


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "color",
        "is colored",
        ("red", "blue", "green", "yellow", "black", "white", "brown", "gray", "orange", "purple"),
        question="what color is the {e} ?",
    ),
    Attribute(
        "habitat",
        "lives in the",
        (
            "forest",
            "desert",
            "swamp",
            "mountains",
            "river",
            "cave",
            "meadow",
            "jungle",
            "tundra",
            "reef",
        ),
        question="where does the {e} live ?",
        cause="covering",
    ),
    Attribute(
        "diet",
        "feeds on",
        (
            "seeds",
            "fish",
            "insects",
            "leaves",
            "fruit",
            "meat",
            "roots",
            "grass",
            "worms",
            "nectar",
        ),
        question="what does the {e} eat ?",
        cause="habitat",
    ),
    Attribute(
        "size",
        "is as big as a",
        ("mouse", "cat", "dog", "goat", "horse", "whale"),
        question="how big is the {e} ?",
    ),
    Attribute(
        "sound",
        "makes a sound like a",
        ("whistle", "drum", "bell", "horn", "flute", "rattle", "trumpet", "harp"),
        question="what sound does the {e} make ?",
    ),
    Attribute(
        "covering",
        "is covered in",
        ("fur", "scales", "feathers", "shells", "spines", "slime", "bark", "wool"),
        question="what covers the {e} ?",
    ),
    Attribute(
        "speed",
        "moves",
        ("slowly", "swiftly", "steadily", "erratically", "silently", "clumsily"),
        question="how does the {e} move ?",
        cause="legs",
    ),
    Attribute(
        "active",
        "is awake at",
        ("dawn", "noon", "dusk", "night", "midnight"),
        question="when is the {e} awake ?",
        cause="enemy",
    ),
    Attribute(
        "mood",
        "has a temper that is",
        ("calm", "fierce", "shy", "playful", "grumpy", "curious", "lazy", "proud"),
        question="what is the temper of the {e} ?",
    ),
    Attribute(
        "legs",
        "walks on",
        ("two", "four", "six", "eight", "ten"),
        suffix="legs",
        question="how many legs does the {e} have ?",
    ),
    Attribute("enemy", "is hunted by", question="who hunts the {e} ?"),
    Attribute("friend", "shares food with", question="who is the friend of the {e} ?"),
)
ATTR_BY_NAME = {a.name: a for a in ATTRIBUTES}

# Sentence frames. Pretraining uses TRAIN_FRAMES; HELDOUT_FRAME is never seen in any training
# text, so true-vs-false preference under it tests knowledge, not memorised strings.
TRAIN_FRAMES: tuple[str, ...] = ("{c} .", "it is known that {c} .", "people say that {c} .")
HELDOUT_FRAME = "we noticed that {c} ."

PROMPT_TEMPLATE = "tell me about the {e} ."
MORE_TEMPLATE = "tell me more about the {e} ."
WHY_TEMPLATE = "why {clause} ?"

_ONSETS = (
    "b",
    "d",
    "f",
    "g",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "dr",
    "gl",
    "kr",
    "pl",
    "sn",
    "st",
    "tr",
    "zw",
    "bl",
)
_VOWELS = ("a", "e", "i", "o", "u", "oo", "ai", "ee")
_CODAS = ("b", "k", "l", "m", "n", "p", "r", "sh", "t", "x", "ng", "rk")


@dataclass
class World:
    """A generated world: entities and their attribute values."""

    seed: int
    entities: list[str]
    facts: dict[str, dict[str, str]]  # entity -> attribute -> value
    train_entities: list[str] = field(default_factory=list)  # seen by SFT
    heldout_entities: list[str] = field(default_factory=list)  # never in SFT data

    @property
    def attributes(self) -> tuple[Attribute, ...]:
        return ATTRIBUTES

    def value(self, entity: str, attr: str) -> str:
        return self.facts[entity][attr]

    def clause(self, entity: str, attr: str, value: str | None = None) -> str:
        a = ATTR_BY_NAME[attr]
        return a.render(entity, self.value(entity, attr) if value is None else value)

    def explained(self, entity: str, attr: str) -> str:
        """'<fact> because <cause fact>' for an attribute that has a cause."""
        cause = ATTR_BY_NAME[attr].cause
        assert cause is not None, attr
        return f"{self.clause(entity, attr)} because {self.clause(entity, cause)}"

    def wrong_value(self, entity: str, attr: str, rng: random.Random) -> str:
        a = ATTR_BY_NAME[attr]
        pool = [e for e in self.entities if e != entity] if a.relation else list(a.values)
        true = self.value(entity, attr)
        return rng.choice([v for v in pool if v != true])

    def vocabulary(self) -> list[str]:
        """Every word the world can produce (for the word-level tokenizer)."""
        words: set[str] = set(self.entities)
        texts = [PROMPT_TEMPLATE, MORE_TEMPLATE, WHY_TEMPLATE, HELDOUT_FRAME, *TRAIN_FRAMES]
        for a in ATTRIBUTES:
            texts += [a.phrase, a.suffix, a.question, " ".join(a.values)]
        texts += ["the because"]
        for t in texts:
            words.update(
                w
                for w in t.replace("{e}", "").replace("{c}", "").replace("{clause}", "").split()
                if w
            )
        return sorted(words)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def load(cls, path: str | Path) -> World:
        return cls(**json.loads(Path(path).read_text()))


def _names(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    names: list[str] = []
    while len(names) < n:
        syl = rng.choice((1, 2, 2))
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syl))
        word += rng.choice(_CODAS)
        if word not in taken and len(word) >= 4:
            taken.add(word)
            names.append(word)
    return names


def generate_world(seed: int, n_entities: int, heldout_fraction: float = 0.3) -> World:
    """Generate a world deterministically from `seed`.

    Args:
        seed: the world's seed (same seed -> identical world).
        n_entities: number of entities (made-up one-word animal names).
        heldout_fraction: share of entities kept out of the instruction (SFT) data.
    """
    if n_entities < 4:
        raise ValueError(f"data.n_entities must be >= 4 (got {n_entities})")
    rng = random.Random(seed)
    reserved = {w for a in ATTRIBUTES for w in (*a.values, *a.phrase.split(), a.suffix)}
    reserved |= {"the", "because", "that", "tell", "about", "more", "why", "what", "where"}
    entities = _names(rng, n_entities, set(reserved))
    facts: dict[str, dict[str, str]] = {}
    for e in entities:
        row = {}
        for a in ATTRIBUTES:
            pool = [x for x in entities if x != e] if a.relation else list(a.values)
            row[a.name] = rng.choice(pool)
        if row["enemy"] == row.get("friend"):
            row["friend"] = rng.choice([x for x in entities if x not in (e, row["enemy"])])
        facts[e] = row
    order = entities[:]
    rng.shuffle(order)
    n_held = max(1, round(heldout_fraction * n_entities))
    return World(
        seed=seed,
        entities=entities,
        facts=facts,
        train_entities=sorted(order[n_held:]),
        heldout_entities=sorted(order[:n_held]),
    )
