"""Defect-isolating edits of tiny-world answers, for reward-model training and its checks.

Each edit changes one answer in exactly one way the gold scorer cares about, so a pair
(better, worse) differs by one defect only:

* `wrong`: one true fact's value is swapped for a false one (correct -1, wrong +1; same length);
* `repeat`: a true sentence is said again later (repeats +1);
* `explanation`: a true fact gets its true "because" clause (explained +1; the edit is better);
* `off_topic`: a true fact about the subject becomes the same attribute of another animal
  (correct -1, off_topic +1).

An edit is kept only when the gold scorer's counts change exactly as named, so every pair is
clean whatever the answer looked like (frames, repeats, truncation).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from c2f_exp.tinyworld.scorer import GoldScorer, Score, parse_claim
from c2f_exp.tinyworld.world import ATTR_BY_NAME

DEFECTS = ("wrong", "repeat", "explanation", "off_topic")
_SPLIT = re.compile(r"(?<=[.?!])\s+")
# expected change of the scorer's counts, worse minus better, for each defect
_DELTAS = {
    "wrong": {"correct": -1, "wrong": 1},
    "repeat": {"repeats": 1, "claims": 1, "sentences": 1},
    "explanation": {"explained": -1},
    "off_topic": {"correct": -1, "off_topic": 1},
}
_FIELDS = ("correct", "wrong", "repeats", "explained", "off_topic", "claims", "sentences")


def sentences(text: str) -> list[str]:
    """An answer split after each '.', '?' or '!' (a truncated tail stays a fragment)."""
    return [s for s in _SPLIT.split(text.strip()) if s]


def _true_plain(scorer: GoldScorer, sents: list[str], subject: str) -> list[tuple[int, str, str]]:
    """(index, attribute, value) of first-time true claims about `subject` without 'because'."""
    seen: set[tuple[str, str]] = set()
    out = []
    for i, s in enumerate(sents):
        claim = parse_claim(s.lower().partition(" because ")[0])
        if claim is None:
            continue
        first = claim[:2] not in seen
        seen.add(claim[:2])
        if first and claim[0] == subject and " because " not in s and scorer.is_true(*claim):
            out.append((i, claim[1], claim[2]))
    return out


def _edit(kind: str, sents: list[str], subject: str, scorer: GoldScorer, rng: random.Random):
    """One edited copy of `sents` (list) with defect `kind` applied, or None if none applies.
    For `explanation` the edit is the *better* answer."""
    world = scorer.world
    cands = _true_plain(scorer, sents, subject)
    if kind == "explanation":
        cands = [c for c in cands if ATTR_BY_NAME[c[1]].cause]
    if not cands:
        return None
    i, attr, value = rng.choice(cands)
    a, out = ATTR_BY_NAME[attr], list(sents)
    old = a.render(subject, value)
    if kind == "wrong":
        out[i] = sents[i].replace(old, a.render(subject, world.wrong_value(subject, attr, rng)))
    elif kind == "repeat":
        out.insert(rng.randint(i + 1, len(sents)), sents[i])
    elif kind == "explanation":
        body = sents[i].rstrip(" .")
        out[i] = f"{body} because {world.clause(subject, a.cause)} ."
    else:  # off_topic: the same attribute, true, of another animal
        other = rng.choice([e for e in world.entities if e != subject])
        out[i] = sents[i].replace(old, world.clause(other, attr))
    return out


def _counts(s: Score) -> dict[str, int]:
    return {f: getattr(s, f) for f in _FIELDS}


def defect_pair(
    text: str, subject: str, kind: str, scorer: GoldScorer, rng: random.Random
) -> tuple[str, str] | None:
    """(better, worse) answers that differ by one defect `kind` (DEFECTS), or None.

    `text` is one of them: the better one for every kind but `explanation`.
    """
    sents = sentences(text)
    edited = _edit(kind, sents, subject, scorer, rng)
    if edited is None:
        return None
    new = " ".join(edited)
    better, worse = (new, text) if kind == "explanation" else (text, new)
    cb, cw = _counts(scorer.score(better, subject)), _counts(scorer.score(worse, subject))
    want = {f: cb[f] + _DELTAS[kind].get(f, 0) for f in _FIELDS}
    return (better, worse) if cw == want else None


def defect_pairs(
    texts: list[str],
    subjects: list[str],
    scorer: GoldScorer,
    seed: int,
    per_kind: int | None = None,
) -> dict[str, list[tuple[int, str, str]]]:
    """Up to `per_kind` (row, better, worse) pairs of each defect, from answers `texts` about
    `subjects` (row: the index of the source answer). Kinds are tried in turn on every answer, so
    each kind draws from the same answers and shares stay as equal as the answers allow."""
    rng = random.Random(seed)
    out: dict[str, list[tuple[int, str, str]]] = {k: [] for k in DEFECTS}
    for n, (t, e) in enumerate(zip(texts, subjects, strict=True)):
        for kind in DEFECTS:
            if per_kind is not None and len(out[kind]) >= per_kind:
                continue
            pair = defect_pair(t, e, kind, scorer, rng)
            if pair:
                out[kind].append((n, *pair))
    if per_kind is None:  # equal shares: as many of each kind as the rarest has
        least = min(len(v) for v in out.values())
        out = {k: v[: max(least, 1)] for k, v in out.items()}
    return out


def defect_agreement(
    score_fn: Callable[[list[str], list[str]], object],
    prompts: list[str],
    pairs: dict[str, list[tuple[int, str, str]]],
) -> dict[str, float | int | None]:
    """Share of each defect's pairs whose better answer the reward model scores higher.

    `score_fn(prompts, texts)` returns (N,) scores; `prompts[row]` is each pair's prompt.
    Returns `defect_<kind>_agreement` (None without pairs) and `defect_<kind>_pairs`.
    """
    out: dict[str, float | int | None] = {}
    for kind, rows in pairs.items():
        if not rows:
            out.update({f"defect_{kind}_agreement": None, f"defect_{kind}_pairs": 0})
            continue
        ps = [prompts[n] for n, _, _ in rows]
        good = score_fn(ps, [b for _, b, _ in rows])
        bad = score_fn(ps, [w for _, _, w in rows])
        hits = sum(float(g) > float(b) for g, b in zip(good, bad, strict=True))
        out[f"defect_{kind}_agreement"] = hits / len(rows)
        out[f"defect_{kind}_pairs"] = len(rows)
    return out
