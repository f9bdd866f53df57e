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
    if p.is_file() and p.suffix == ".jsonl":
        fix = 'each line must be {"chosen": "...", "rejected": "..."} (HH-RLHF transcripts)'
        layout.check_jsonl(p, key, {"chosen": str, "rejected": str}, fix)


def hh_pairs(ref: str, split: str, limit: int | None) -> list[dict]:
    """Anthropic HH-RLHF style rows (chosen/rejected transcripts) -> chat pairs.

    Returns rows {"prompt": turns before the last reply, "chosen": str, "rejected": str}; rows
    whose transcripts do not alternate or do not share the prompt turns are dropped (counted).
    """
    from datasets import load_dataset

    p = Path(ref)
    ds = (
        load_dataset("json", data_files=str(p), split="train")
        if p.is_file()
        else load_dataset(ref, split=split)
    )
    rows, dropped = [], 0
    for ex in ds:
        c, r = hh_to_turns(ex["chosen"]), hh_to_turns(ex["rejected"])
        if c is None or r is None or c[:-1] != r[:-1] or c[-1]["content"] == r[-1]["content"]:
            dropped += 1
            continue
        rows.append({"prompt": c[:-1], "chosen": c[-1]["content"], "rejected": r[-1]["content"]})
        if limit and len(rows) >= limit:
            break
    log.info("%s[%s]: %d pairs, %d malformed rows dropped", ref, split, len(rows), dropped)
    return rows


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

        self.world = World.load(prepared / "world.json")
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
