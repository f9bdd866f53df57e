"""Preference data for the reward stage: hub pair sets (HH-RLHF style) and the tiny world's
gold-labelled samples.

* `hub_pairs` / `hh_pairs`: chosen/rejected transcripts -> chat pairs sharing the prompt turns;
* `TinyWorldLabeller`: answers sampled from a policy, ordered by the gold scorer (the tiny
  world's stand-in for human labellers), turned into training pairs by `gold_pairs` and into the
  reward model's check by `gold_agreement`.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from c2f_exp.core import layout
from c2f_exp.reward.model import EmptyPreferenceSetError, score_texts

log = logging.getLogger(__name__)


def require_pairs(pairs: list[dict], what: str) -> list[dict]:
    """Raise EmptyPreferenceSetError naming `what` if there are no pairs."""
    if not pairs:
        raise EmptyPreferenceSetError(
            f"the preference set {what} has no pairs; point reward at a "
            "non-empty set (prompt/chosen/rejected rows)"
        )
    return pairs


_TURN = re.compile(r"\n\n(Human|Assistant): ")


def hh_to_turns(text: str) -> list[dict[str, str]] | None:
    """'\\n\\nHuman: a\\n\\nAssistant: b' -> chat turns; None unless user/assistant alternate."""
    parts = _TURN.split(text)
    if parts[0].strip():
        return None
    turns = [
        {"role": "user" if r == "Human" else "assistant", "content": c.strip()}
        for r, c in zip(parts[1::2], parts[2::2], strict=True)
    ]
    roles = [t["role"] for t in turns]
    if not turns or roles != ["user", "assistant"] * (len(turns) // 2) or len(turns) % 2:
        return None
    return turns


def check_hh_file(ref: str, key: str) -> None:
    """A local `.jsonl` preference/prompt file, read whole at preflight: every line a JSON
    object with string `chosen` and `rejected` transcripts, and at least one row (a
    ConfigError naming `key`, the file and the first bad line). Hub ids, directories and other
    formats are left to `datasets`."""
    p = Path(ref)
    files = [p] if p.is_file() and p.suffix == ".jsonl" else []
    if p.is_dir():  # a split directory or a git clone of the hub repo (gzipped subfolders)
        files = sorted([*p.rglob("*.jsonl"), *p.rglob("*.jsonl.gz")])
    fix = (
        'each line must be {"chosen": "...", "rejected": "..."}, HH-RLHF transcripts '
        '("\\n\\nHuman: ...\\n\\nAssistant: ...")'
    )
    for f in files:
        layout.check_jsonl(f, key, {"chosen": str, "rejected": str}, fix, _assistant_turns)


def _assistant_turns(row: dict) -> list[str]:
    """The transcripts of a row without an assistant turn (named as bad fields)."""
    return [
        f"{k} (no '\\n\\nAssistant:')" for k in ("chosen", "rejected") if ASSISTANT not in row[k]
    ]


ASSISTANT = "\n\nAssistant:"


HELD_OUT_FRACTION = 10  # a one-file data set's test split: its last 1/10 of the rows


def hh_pairs(ref: str, split: str, limit: int | None) -> list[dict]:
    """Anthropic HH-RLHF style rows (chosen/rejected transcripts) -> chat pairs.

    Returns rows {"prompt": turns before the last reply, "chosen": str, "rejected": str}; rows
    whose transcripts do not alternate or do not share the prompt turns are dropped (counted).
    A single `.jsonl` file has no splits: `test` is its last tenth, any other split the rest.
    """
    from datasets import load_dataset

    p = Path(ref)
    if p.is_file():  # one file, no splits: hold out its last tenth as `test`
        ds = load_dataset("json", data_files=str(p), split="train")
        n = len(ds)
        k = max(1, n // HELD_OUT_FRACTION) if n > 1 else 0
        log.info(
            "%s is one file with no %r split: its last %d of %d rows are the test split, "
            "the rest train",
            ref,
            split,
            k,
            n,
        )
        ds = ds.select(range(n - k, n) if split == "test" else range(n - k))
    else:
        ds = load_dataset(ref, split=split)
    rows, dropped = [], Counter()
    for ex in ds:
        c, r = hh_to_turns(ex["chosen"]), hh_to_turns(ex["rejected"])
        why = _malformed(c, r)
        if why:
            dropped[why] += 1
            continue
        rows.append({"prompt": c[:-1], "chosen": c[-1]["content"], "rejected": r[-1]["content"]})
        if limit and len(rows) >= limit:
            break
    reasons = ", ".join(f"{n} {why}" for why, n in dropped.most_common())
    log.info(
        "%s[%s]: %d pairs, %d malformed rows dropped (%s)",
        ref,
        split,
        len(rows),
        sum(dropped.values()),
        reasons or "none",
    )
    if not rows and dropped:
        raise EmptyPreferenceSetError(
            f"the preference set {ref}[{split}] has no pairs: all {sum(dropped.values())} "
            f"rows were dropped as malformed ({reasons}); each row needs chosen and rejected "
            "transcripts '\\n\\nHuman: ...\\n\\nAssistant: ...' that share every turn but "
            "the last reply"
        )
    return rows


def _malformed(chosen: list | None, rejected: list | None) -> str | None:
    """Why a chosen/rejected pair of turns cannot be a preference pair, else None."""
    if chosen is None or rejected is None:
        return "without alternating Human/Assistant turns"
    if chosen[:-1] != rejected[:-1]:
        return "whose chosen and rejected differ before the last reply"
    if chosen[-1]["content"] == rejected[-1]["content"]:
        return "with the same chosen and rejected reply"
    return None


def hub_pairs(r: Any) -> tuple[list[dict], list[dict]]:
    """(train, test) chat pairs of the `reward` config's hub data set; train is [] with a path."""
    from c2f_exp.core import hub

    ref = hub.resolve_dataset(r.dataset, "reward.dataset")
    test = require_pairs(
        hh_pairs(ref, r.test_split, r.max_test_pairs), f"{r.dataset}[{r.test_split}]"
    )
    if r.path:  # no training: the test split is all we need
        return [], test
    return require_pairs(
        hh_pairs(ref, r.train_split, r.max_train_pairs), f"{r.dataset}[{r.train_split}]"
    ), test


@dataclass
class Sampled:
    """`k` answers sampled per prompt (grouped: rows i*k .. i*k+k-1) with their gold totals."""

    prompts: list[str]
    texts: list[str]
    gold: torch.Tensor  # (N,)
    k: int

    def pairs(self) -> Iterator[tuple[int, int, float]]:
        """(i, j, gold_i - gold_j) for every pair of one prompt's answers whose gold differs."""
        for start in range(0, len(self.prompts), self.k):
            for i, j in itertools.combinations(range(start, start + self.k), 2):
                if self.gold[i] != self.gold[j]:
                    yield i, j, float(self.gold[i] - self.gold[j])


class TinyWorldLabeller:
    """The tiny world's stand-in for human labellers: answers sampled from a policy, ordered by
    the gold scorer (InstructGPT labels the model's own samples the same way)."""

    def __init__(self, prepared: Path, policy_dir: str):
        from c2f_exp.tinyworld.scorer import GoldScorer
        from c2f_exp.tinyworld.world import World

        self.world = World.load(layout.world_file(prepared))
        self.scorer = GoldScorer(self.world)
        lines = (prepared / "data" / "ppo_prompts.jsonl").read_text().splitlines()
        self.prompts = [json.loads(x) for x in lines if x.strip()]
        self.policy_dir, self._policy = policy_dir, None
        self._memo: dict[tuple, Sampled] = {}  # same arguments, same answers: sample once

    def sample(self, entities: list[str], k: int, max_new: int, seed: int, limit=None) -> Sampled:
        """`k` answers per "tell me about" prompt of `entities` (at most `limit` prompts)."""
        key = (tuple(entities), k, max_new, seed, limit)
        if key not in self._memo:
            self._memo[key] = self._sample(entities, k, max_new, seed, limit)
        return self._memo[key]

    def _sample(self, entities: list[str], k: int, max_new: int, seed: int, limit) -> Sampled:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from c2f_exp.tinyworld.quality import generate

        if self._policy is None:
            d = self.policy_dir
            self._policy = (
                AutoModelForCausalLM.from_pretrained(d, use_safetensors=True),
                AutoTokenizer.from_pretrained(d),
            )
        rows = [p for p in self.prompts if p["entity"] in set(entities)][:limit]
        torch.manual_seed(seed)
        prompts = [r["prompt"] for r in rows for _ in range(k)]
        texts = [t for t, _, _ in generate(*self._policy, prompts, max_new, False, do_sample=True)]
        gold = [self.scorer.score(t, rows[n // k]["entity"]).total() for n, t in enumerate(texts)]
        return Sampled(prompts, texts, torch.tensor(gold), k)


def gold_pairs(s: Sampled, min_margin: float, margin_scale: float = 0.0) -> list[dict]:
    """Preference pairs of sampled answers whose gold totals differ by >= `min_margin`; the BT
    margin is `margin_scale` times the gold difference."""
    return [
        {
            "prompt": s.prompts[i],
            "chosen": s.texts[i if d > 0 else j],
            "rejected": s.texts[j if d > 0 else i],
            "margin": margin_scale * abs(d),
        }
        for i, j, d in s.pairs()
        if abs(d) >= min_margin
    ]


def gold_agreement(
    rm: PreTrainedModel, tok: PreTrainedTokenizerBase, s: Sampled, batch_size: int = 32
) -> dict[str, float]:
    """Share of sampled pairs (gold totals differ) that the reward model orders like the gold
    scorer (a tie in reward counts as disagreement); also for gold gaps >= 1 and Pearson r."""
    r = score_texts(rm, tok, s.prompts, s.texts, batch_size, "plain")
    hits = [(float(r[i] - r[j]) * d > 0, abs(d) >= 1) for i, j, d in s.pairs()]
    big = [ok for ok, is_big in hits if is_big]
    corr = torch.corrcoef(torch.stack([s.gold, r]))[0, 1].item()
    return {  # None where undefined (no pairs, constant scores): JSON has no NaN
        "gold_agreement": sum(ok for ok, _ in hits) / len(hits) if hits else None,
        "gold_pairs": len(hits),
        "gold_agreement_gap1": sum(big) / len(big) if big else None,
        "gold_pearson": corr if math.isfinite(corr) else None,
        "sampled_mean_gold": s.gold.mean().item(),
    }
