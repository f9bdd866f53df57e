"""Sentence-level (process) reward model for the tiny world: per-token scores summed.

The model is a plain `*ForSequenceClassification` (num_labels 1); its `score` head is read at
every token, r_t = score(h_t), and the answer's reward is R = sum_t r_t over the non-pad tokens
(`pooling: sum` in its config, honoured by `reward_model.score_ids`). A causal model sees the
whole answer so far at each token, so it can tell a new fact from a repeated one; summing lets
distinct facts add up, which a last-token classifier of this size does not learn (README).

Training targets come from the gold scorer one sentence at a time, as a process reward model
learns from step labels (Lightman et al. 2023, "Let's Verify Step by Step"): the answer is cut
after each '.', '?', '!' and at the EOS, and segment k's target is the gold total of the
answer's first k sentences minus that of the first k-1. The prompt (with BOS) is segment 0,
target 0. Loss: mean over segments of (sum of r_t in the segment - target)^2, so the summed
score regresses the gold total sentence by sentence.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from c2f_exp.reward.model import encode, token_scores

if TYPE_CHECKING:
    from c2f_exp.reward.config import RewardTrainConf

log = logging.getLogger(__name__)
DELIMITERS = (".", "?", "!")


@dataclass
class Labelled:
    """One answer encoded for process training: ids (L,), seg (L,), targets (S,)."""

    ids: list[int]
    seg: list[int]  # segment of each token: 0 = prompt, k = the answer's k-th sentence
    targets: list[float]  # gold gain of each segment; targets[0] = 0 (the prompt)


def label(
    tok: PreTrainedTokenizerBase, scorer: Any, prompt: str, response: str, subject: str
) -> Labelled:
    """Encode `prompt` + `response` as the reward model reads it (plain) and label each
    sentence with its gain in gold total (`scorer`: a tiny-world GoldScorer)."""
    ids = encode(tok, prompt, response, "plain")
    start = len(encode(tok, prompt, "", "plain")) - 1  # BOS + prompt tokens
    delim = {tok.convert_tokens_to_ids(d) for d in DELIMITERS}
    seg, targets, prev = [0] * start, [0.0], 0.0
    for p in range(start, len(ids)):
        seg.append(len(targets))
        if ids[p] in delim or p == len(ids) - 1:
            text = tok.decode(ids[start : p + 1], skip_special_tokens=True)
            total = scorer.score(text, subject).total()
            targets.append(total - prev)
            prev = total
    return Labelled(ids, seg, targets)


def _batch(rows: list[Labelled], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-padded ids, mask, seg (B, L) and targets, target mask (B, S)."""
    width, n_seg = max(len(r.ids) for r in rows), max(len(r.targets) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    seg = torch.zeros_like(ids)
    tgt = torch.zeros((len(rows), n_seg))
    tmask = torch.zeros_like(tgt)
    for j, r in enumerate(rows):
        ids[j, : len(r.ids)] = torch.tensor(r.ids)
        mask[j, : len(r.ids)] = 1
        seg[j, : len(r.ids)] = torch.tensor(r.seg)
        tgt[j, : len(r.targets)] = torch.tensor(r.targets)
        tmask[j, : len(r.targets)] = 1
    return ids, mask, seg, tgt, tmask


def segment_loss(
    r: torch.Tensor, mask: torch.Tensor, seg: torch.Tensor, tgt: torch.Tensor, tmask: torch.Tensor
) -> torch.Tensor:
    """Mean over segments of (sum of r_t in the segment - target)^2.

    Args: r, mask, seg: (B, L) per-token scores, attention mask, segment ids; tgt, tmask: (B, S).
    """
    sums = torch.zeros_like(tgt).scatter_add(1, seg, r * mask)
    return ((sums - tgt) ** 2 * tmask).sum() / tmask.sum()


def train_process(
    model: PreTrainedModel, rows: list[Labelled], pad_id: int, tcfg: RewardTrainConf, seed: int
) -> list[dict]:
    """AdamW with linear warmup and cosine decay on `segment_loss`. Returns a loss history
    [{"step", "loss"}] (every 5 steps, as the TRL trainer logs)."""
    g = torch.Generator().manual_seed(seed)
    bs = tcfg.batch_size
    steps = tcfg.max_steps if tcfg.max_steps > 0 else math.ceil(len(rows) / bs * tcfg.epochs)
    warm = max(1, round(tcfg.warmup_ratio * steps))
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)

    def lr_at(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    dev = next(model.parameters()).device
    model.train()
    hist, order, t0 = [], torch.zeros(0, dtype=torch.long), time.time()
    for step in range(steps):
        if len(order) < bs:  # a fresh shuffle per epoch
            order = torch.cat([order, torch.randperm(len(rows), generator=g)])
        pick, order = order[:bs], order[bs:]
        ids, mask, seg, tgt, tmask = (x.to(dev) for x in _batch([rows[i] for i in pick], pad_id))
        loss = segment_loss(token_scores(model, ids, mask), mask, seg, tgt, tmask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 5 == 4 or step == steps - 1:
            hist.append({"step": step + 1, "loss": loss.item()})
    log.info("process RM: %d steps on %d answers in %.1fs", steps, len(rows), time.time() - t0)
    model.eval()
    return hist
