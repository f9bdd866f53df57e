"""Gold scorer: the ground truth for any answer about the tiny world (docs/method.md §3).

It parses an answer into sentences, each into a main clause and an optional "because" clause,
recognises every fact claim `(entity, attribute, value)` by the attribute's unique wording, and
counts correct distinct facts, wrong facts, repeated facts, credited explanations and sentences
it cannot read. The learned reward model, the judges and every stage are checked against it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from c2f_exp.tinyworld.world import ATTRIBUTES, World

_SENT_SPLIT = re.compile(r"[.?!\n]|</s>")
_PATTERNS = [
    (a, re.compile(rf"\bthe (\w+) {re.escape(a.phrase)} {'the ' if a.relation else ''}(\w+)\b"))
    for a in ATTRIBUTES
]


@dataclass
class Score:
    """Counts for one answer. `correct` and `explained` are distinct (entity, attribute)."""

    correct: int = 0  # distinct true facts (about the subject, when one is given)
    wrong: int = 0  # claims with a false value (or an unknown entity)
    repeats: int = 0  # claims of an (entity, attribute) already claimed in this answer
    explained: int = 0  # distinct true facts with the world's true cause after "because"
    off_topic: int = 0  # claims about entities other than the subject
    claims: int = 0  # every recognised claim, repeats included
    sentences: int = 0
    unparsed: int = 0  # sentences with no recognisable claim

    @property
    def repetition_rate(self) -> float:
        return self.repeats / self.claims if self.claims else 0.0

    def total(
        self,
        w_explained: float = 0.5,
        w_wrong: float = 1.0,
        w_repeat: float = 0.25,
        w_unparsed: float = 0.25,
    ) -> float:
        """Scalar gold score: facts and explanations up; wrong, repeated, garbled text down."""
        return (
            self.correct
            + w_explained * self.explained
            - w_wrong * self.wrong
            - w_repeat * self.repeats
            - w_unparsed * self.unparsed
        )

    def as_dict(self) -> dict[str, float]:
        d: dict[str, float] = dict(asdict(self))
        d["repetition_rate"] = self.repetition_rate
        d["total"] = self.total()
        return d


def parse_claim(clause: str) -> tuple[str, str, str] | None:
    """First fact claim in a clause: (entity, attribute, value), or None."""
    best: tuple[int, tuple[str, str, str]] | None = None
    for attr, pat in _PATTERNS:
        m = pat.search(clause)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), (m.group(1), attr.name, m.group(2)))
    return best[1] if best else None


class GoldScorer:
    """Scores answers against a `World`."""

    def __init__(self, world: World):
        self.world = world

    def is_true(self, entity: str, attr: str, value: str) -> bool:
        row = self.world.facts.get(entity)
        return row is not None and row.get(attr) == value

    def score(self, answer: str, subject: str | None = None) -> Score:
        """Score one answer.

        Args:
            answer: model output (plain text; special tokens other than </s> removed).
            subject: the entity the prompt asked about; facts about others count as off-topic.
        """
        s = Score()
        seen: set[tuple[str, str]] = set()
        credited: set[tuple[str, str]] = set()
        for sent in _SENT_SPLIT.split(answer.lower()):
            if not sent.strip():
                continue
            s.sentences += 1
            main, _, because = sent.partition(" because ")
            claim = parse_claim(main)
            if claim is None:
                s.unparsed += 1
                continue
            ent, attr, val = claim
            s.claims += 1
            if (ent, attr) in seen:
                s.repeats += 1
                continue
            seen.add((ent, attr))
            if not self.is_true(ent, attr, val):
                s.wrong += 1
                continue
            if subject is not None and ent != subject:
                s.off_topic += 1
                continue
            s.correct += 1
            cause = parse_claim(because) if because else None
            wanted = next(a.cause for a in ATTRIBUTES if a.name == attr)
            if (
                cause
                and wanted == cause[1]
                and cause[0] == ent
                and self.is_true(*cause)
                and (ent, attr) not in credited
            ):
                credited.add((ent, attr))
                s.explained += 1
        return s
