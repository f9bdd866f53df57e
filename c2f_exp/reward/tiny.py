"""The tiny world's reward model: training data from the gold scorer, training, and its checks.

Used by the `reward` stage (`reward.source=tinyworld`) and `tests/benchmarks/rm_variants.py`.
Training data (all about the training entities; held-out entities are only ever evaluated):
* prepare's static preference pairs;
* on-policy answers sampled from the init policy, ordered (`pairwise`) or labelled sentence by
  sentence (`process`) by the gold scorer;
* `defects`: edits of those answers that isolate one defect each (defects.py), equal shares;
* `knowledge`: a learned head over the init LM's surprisal, fitted on the same pairs after the
  classifier (knowledge_reward.py);
* `rounds` > 1: iterated labelling. Each later round samples twice as many fresh answers, keeps
  the half the current reward model ranks highest per prompt (best-of-2 under the current RM:
  the answers a policy optimising it moves towards, Llama 2's rejection sampling), labels them
  with the gold scorer and trains on, from the current model, with everything so far.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import torch

from c2f_exp.reward import defects as dfx
from c2f_exp.reward import knowledge
from c2f_exp.reward import model as rmod
from c2f_exp.reward import preferences as prefs
from c2f_exp.reward.process import label, train_process

if TYPE_CHECKING:
    from c2f_exp.reward.config import RewardConf

log = logging.getLogger(__name__)


def subject_of(prompt: str) -> str:
    """The animal of a "tell me about the X ." prompt."""
    return prompt.split()[-2]


def _texts(static: list[dict], s: prefs.Sampled) -> tuple[list[str], list[str]]:
    """(prompts, answers) of the static pairs' both sides and the sampled answers."""
    ps = [p["prompt"] for p in static for _ in (0, 1)] + s.prompts
    ts = [t for p in static for t in (p["chosen"], p["rejected"])] + s.texts
    return ps, ts


def _defect_rows(labeller: Any, s: prefs.Sampled, seed: int) -> list[dict]:
    """Defect-isolating pairs (equal shares of each kind) of the sampled answers."""
    subs = [subject_of(p) for p in s.prompts]
    pairs = dfx.defect_pairs(s.texts, subs, labeller.scorer, seed)
    return [
        {"prompt": s.prompts[n], "chosen": b, "rejected": w, "margin": 0.0, "kind": k}
        for k, rows in pairs.items()
        for n, b, w in rows
    ]


def build_data(
    r: RewardConf, labeller: Any, tok: Any, static: list[dict], s: prefs.Sampled, seed: int
) -> list:
    """Training rows for `r.objective`: pair dicts (pairwise) or `Labelled` answers (process)."""
    extra = _defect_rows(labeller, s, seed) if r.defects.enabled else []
    if r.objective == "pairwise":
        return static + prefs.gold_pairs(s, r.onpolicy.min_margin, r.train.margin_scale) + extra
    ps, ts = _texts(static, s)
    ps += [d["prompt"] for d in extra]
    ts += [d["rejected" if d["kind"] != "explanation" else "chosen"] for d in extra]
    return [label(tok, labeller.scorer, p, t, subject_of(p)) for p, t in zip(ps, ts, strict=True)]


def _fit(model, tok, data: list, r: RewardConf, workdir, seed: int) -> list[dict]:
    if r.objective == "process":
        return train_process(model, data, tok.pad_token_id, r.train, seed)
    return rmod.train_reward_model(model, tok, data, r.format, r.train, workdir, seed)


def _best_half(model, tok, s: prefs.Sampled, batch_size: int) -> prefs.Sampled:
    """The higher-scored half of each prompt's answers under the current reward model."""
    r = rmod.score_texts(model, tok, s.prompts, s.texts, batch_size, "plain")
    keep = []
    for start in range(0, len(s.texts), s.k):
        top = torch.topk(r[start : start + s.k], s.k // 2).indices + start
        keep += sorted(top.tolist())
    return prefs.Sampled(
        [s.prompts[i] for i in keep], [s.texts[i] for i in keep], s.gold[keep], s.k // 2
    )


def train_tiny(
    r: RewardConf, labeller: Any, model, tok, static: list[dict], seed: int, workdir, lm_src=None
) -> dict[str, Any]:
    """Train `model` (from init) on the tiny world's data for `r.rounds` rounds. Returns
    metrics (train_pairs: pairs or labelled answers of the last round, train_seconds)."""
    o, data, hist, t0 = r.onpolicy, list(static), [], time.time()
    pairs = list(static)  # what the knowledge head is fitted on (= data for `pairwise`)
    for rnd in range(r.rounds):
        if not o.enabled:
            none = prefs.Sampled([], [], torch.zeros(0), 2)
            data = build_data(r, labeller, tok, static, none, seed)
        else:
            k = o.samples_per_prompt * (2 if rnd else 1)
            sd = seed + 2 if rnd == 0 else seed + 10 + rnd  # never an evaluation sample's seed
            s = labeller.sample(labeller.world.train_entities, k, o.max_new_tokens, sd)
            if rnd:
                s = _best_half(model, tok, s, r.eval_batch_size)
            new = build_data(r, labeller, tok, static if rnd == 0 else [], s, seed + rnd)
            data = new if rnd == 0 else data + new
            pairs += prefs.gold_pairs(s, o.min_margin)
        prefs.require_pairs(data, "for training")
        hist += _fit(model, tok, data, r, workdir / f"round{rnd}", seed + rnd)
    model.eval().requires_grad_(False)
    out: dict[str, Any] = {"train_pairs": len(data)}
    if r.knowledge.enabled:
        fitted_on = data if r.objective == "pairwise" else pairs
        out["knowledge_train_accuracy"] = fit_knowledge(
            model, tok, fitted_on, lm_src or labeller.policy_dir, r.knowledge.sentences
        )
    out.update(train_seconds=round(time.time() - t0, 2), history=hist)
    return out


def fit_knowledge(model, tok, pairs: list[dict], lm_src: str, sentences: bool = True) -> float:
    """Fit and attach the knowledge head (knowledge_reward.py) on the training `pairs`, with the
    causal LM at `lm_src` (the reward model's init), with or without the sentence features.
    Returns its training pair accuracy."""
    lm = knowledge.load_lm(lm_src)
    enc = {
        side: [rmod.encode(tok, p["prompt"], p[side], "plain") for p in pairs]
        for side in ("chosen", "rejected")
    }
    rm = {k: rmod.score_ids(model, v, tok.pad_token_id) for k, v in enc.items()}
    ends = knowledge.sentence_end_ids(tok) if sentences else None
    f = {k: knowledge.features_of(lm, v, tok.pad_token_id, ends=ends) for k, v in enc.items()}
    head = knowledge.fit(
        rm["chosen"] - rm["rejected"], f["chosen"], f["rejected"], sentence_ends=ends
    )
    setattr(model.config, knowledge.KEY, {**head, "lm": knowledge.LM_DIR})
    knowledge.attach(model, lm)
    return head["train_accuracy"]


def evaluate_tiny(r: RewardConf, labeller: Any, model, tok, seed: int) -> dict[str, Any]:
    """Agreement with the gold scorer on fresh answers (held-out animals, then PPO's animals:
    prefix `ppo_prompts_`), overall and on pairs that differ by one defect (defects.py)."""
    g, metrics = r.gold, {}

    def score(ps: list[str], ts: list[str]) -> torch.Tensor:
        return rmod.score_texts(model, tok, ps, ts, r.eval_batch_size, "plain")

    for prefix, ents, sd in (
        ("", labeller.world.heldout_entities, seed + 1),
        ("ppo_prompts_", labeller.world.train_entities, seed + 3),
    ):
        s = labeller.sample(ents, g.samples_per_prompt, g.max_new_tokens, sd, g.max_prompts)
        agree = prefs.gold_agreement(model, tok, s, r.eval_batch_size)
        subs = [subject_of(p) for p in s.prompts]
        pairs = dfx.defect_pairs(s.texts, subs, labeller.scorer, sd, g.defect_pairs_per_kind)
        agree.update(dfx.defect_agreement(score, s.prompts, pairs))
        metrics.update({prefix + k: v for k, v in agree.items()})
    return metrics
