"""PPO's update phase: `ppo_epochs` passes of shuffled minibatch steps over one experience batch.

The first minibatch of the first epoch sees the policy and critic exactly as the rollout left
them, so the forward pass that computes its losses is the same as the one that would compute
its old values: `head_forward` runs it once, with autograd, before the experience is built; the
experience takes the minibatch's old values from it (its old log-probs come from sampling) and
the update backpropagates through it instead of running the forward again (`Head`). One
policy+critic forward per iteration is saved; the update is the plain one to float tolerance
(tests/coarse/test_ppo_fast_path.py). Off under DeepSpeed or several processes, where engines wrap
forward and backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from c2f_exp.coarse import ppo
from c2f_exp.coarse.rollout import Rollout, position_ids

if TYPE_CHECKING:
    from c2f_exp.coarse.config import CoarseConf

LOSS_KEYS = ("pg_loss", "vf_loss", "clipfrac", "vf_clipfrac", "approx_kl", "entropy")


@dataclass
class Head:
    """Epoch 0's first minibatch: its rows (mb,), response width t, and the policy+critic
    forward on them (logits (mb, t, V), values (mb, t)) with autograd graphs."""

    rows: torch.Tensor
    t: int
    logits: torch.Tensor
    values: torch.Tensor


def head_forward(model, rollout: Rollout, rows: torch.Tensor) -> Head:
    """The ActorCritic forward of minibatch `rows`, trimmed as `ppo_update` trims it."""
    model.train()  # as in the update
    mask = rollout.response_mask[rows]
    t = int(mask.sum(1).max())
    p_len = rollout.prompt_ids.shape[1]
    attn = rollout.attention_mask[rows, : p_len + t]
    seq = rollout.sequences[rows, : p_len + t]
    logits, values = model(seq, attn, position_ids(attn), t)
    return Head(rows, t, logits, values)


def ppo_update(
    model, opt, acc, exp: Any, c: CoarseConf, mb: int, perm0=None, head: Head | None = None
) -> dict[str, float]:
    """Minibatch PPO steps (clipped policy and value losses, one optimizer). Returns mean stats.

    Args:
        exp: an `Experience` of B rows; mb: rows per minibatch (this process).
        perm0: epoch 0's row permutation when drawn earlier (for `head`); else drawn here.
        head: `head_forward` of `perm0[:mb]`, reused as that minibatch's forward.
    """
    b = exp.sequences.shape[0]
    p_len = exp.sequences.shape[1] - exp.response_ids.shape[1]
    sums, n = dict.fromkeys(LOSS_KEYS, 0.0), 0
    model.train()
    for epoch in range(c.ppo_epochs):
        perm = perm0 if epoch == 0 and perm0 is not None else torch.randperm(b)
        for i in range(0, b, mb):
            e = exp.select(perm[i : i + mb])
            t = int(e.mask.sum(1).max())  # drop columns past the longest response here
            full = (e.sequences, e.attention_mask, e.position_ids)
            seq, attn, pos = (x[:, : p_len + t] for x in full)
            m, old_v, old_lp = e.mask[:, :t], e.values[:, :t], e.old_logprobs[:, :t]
            if epoch == 0 and i == 0 and head is not None:
                assert head.t == t and torch.equal(head.rows, perm[:mb]), "stale head forward"
                logits, values = head.logits, head.values
            else:
                logits, values = model(seq, attn, pos, t)
            logits = logits / c.temperature  # the distribution the rollout sampled from
            logp = ppo.logprobs_from_logits(logits, e.response_ids[:, :t])
            adv, ret = e.advantages[:, :t], e.returns[:, :t]
            pg, clipfrac, approx_kl = ppo.policy_loss(logp, old_lp, adv, m, c.cliprange)
            vf, vf_clip = ppo.value_loss(values, old_v, ret, m, c.cliprange_value)
            acc.backward(pg + c.vf_coef * vf)
            if acc.sync_gradients:
                acc.clip_grad_norm_(model.parameters(), c.max_grad_norm)
            opt.step()
            opt.zero_grad()
            with torch.no_grad():
                ent = ppo.masked_mean(ppo.entropy_from_logits(logits), m)
            losses = (pg, vf, clipfrac, vf_clip, approx_kl, ent)
            for k, v in zip(LOSS_KEYS, losses, strict=True):
                sums[k] += float(v.detach())
            n += 1
    return {k: v / n for k, v in sums.items()}
