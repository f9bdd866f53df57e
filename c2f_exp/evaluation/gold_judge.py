"""`tinyworld_gold` judge: the gold scorer grades the tiny world's two-turn questions on 1-10.

Ratings are `1 + 9 * clip(q, 0, 1)` of a quality share `q` per turn:

* turn 1 ("tell me about the X ."): gold total (correct + 0.5 explained - wrong - 0.25 repeats -
  0.25 unreadable sentences) over the best total possible, every attribute stated and every
  explainable one explained (12 + 0.5 * 4 = 14 in the default world).
* turn 2, category `more` ("tell me more about the X ."): what the second answer adds to the
  first — total(answer 1 + answer 2) - total(answer 1), so restated facts count as repeats — over
  what was left to add (best total - total(answer 1), at least 1).
* turn 2, category `why` ("why <fact> ?"): 1 when the answer states the fact's true cause (the
  world's `cause` attribute of the asked one, about the same entity), minus 0.25 per wrong claim.
"""

from __future__ import annotations

import re

from c2f_exp.evaluation.verdicts import Judgment, Match

_SPLIT = re.compile(r"[.?!\n]|</s>|\bbecause\b")


class GoldJudge:
    name = "tinyworld_gold"

    def __init__(self, world_path: str):
        from c2f_exp.tinyworld.scorer import GoldScorer
        from c2f_exp.tinyworld.world import ATTRIBUTES, World

        self.world = World.load(world_path)
        self.scorer = GoldScorer(self.world)
        self.best = len(ATTRIBUTES) + 0.5 * sum(1 for a in ATTRIBUTES if a.cause)
        self.cause = {a.name: a.cause for a in ATTRIBUTES}

    @staticmethod
    def rating(q: float) -> float:
        return 1.0 + 9.0 * min(1.0, max(0.0, q))

    def turn1(self, answer: str, entity: str) -> tuple[float, str]:
        total = self.scorer.score(answer, entity).total()
        return total / self.best, f"gold total {total:.2f} of {self.best:.1f}"

    def more(self, a1: str, a2: str, entity: str) -> tuple[float, str]:
        t1 = self.scorer.score(a1, entity).total()
        gain = self.scorer.score(f"{a1} . {a2}", entity).total() - t1
        left = max(1.0, self.best - max(0.0, t1))
        return gain / left, f"gold gain {gain:.2f} of {left:.2f} left"

    def why(self, answer: str, entity: str, attr: str) -> tuple[float, str]:
        from c2f_exp.tinyworld.scorer import parse_claim

        cause = self.cause.get(attr)
        claims = [parse_claim(c) for c in _SPLIT.split(answer.lower())]
        hit = cause is not None and any(
            c and c[0] == entity and c[1] == cause and self.scorer.is_true(*c) for c in claims
        )
        wrong = self.scorer.score(answer, entity).wrong
        return float(
            hit
        ) - 0.25 * wrong, f"cause {cause} {'stated' if hit else 'missing'}, {wrong} wrong claim(s)"

    def judge(self, m: Match) -> Judgment:
        q = m.question
        entity = q["entity"]
        if m.turn == 1:
            share, note = self.turn1(m.answers[0], entity)
        elif q.get("category") == "why":
            share, note = self.why(m.answers[1], entity, q["why_attribute"])
        else:
            share, note = self.more(m.answers[0], m.answers[1], entity)
        return Judgment(
            self.rating(share), f"gold-{q.get('category', 'about')}-t{m.turn}", judgment=note
        )

    def judge_many(self, matches: list[Match]) -> list[Judgment]:
        return [self.judge(m) for m in matches]
