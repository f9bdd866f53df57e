"""Turn a rollout into PPO experience: scores, log-probs, values, shaped rewards, advantages.

Per sequence b with response mask m (B, T) and last valid position e_b (EOS, or the limit):

    r_{b,t} = -beta * KL_t(pi || pi_ref)  +  [t == e_b] * S_b
    S_b     = RM(prompt_b, response_b) - missing_eos_penalty * truncated_b + overlong_b

(Ziegler et al. 2019; Ouyang et al. 2022), then GAE over r and the critic's values. The overlong
term is DAPO's soft punishment (Yu et al. 2025, eq. 13) taken from TRL, measured against the
limit in force.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from c2f_exp.coarse import ppo
from c2f_exp.coarse.rollout import Rollout, position_ids
from c2f_exp.core.errors import C2FError

if TYPE_CHECKING:
    from c2f_exp.coarse.config import CoarseConf

log = logging.getLogger(__name__)


class NonFiniteRewardError(C2FError):
    """Too many batches had NaN/inf rewards (each was skipped and counted)."""


class EmptyPromptSetError(C2FError):
    """The PPO prompt set is empty."""


@dataclass
class Experience:
    """PPO inputs for B sequences (P prompt + T response positions).

    sequences, attention_mask, position_ids: (B, P + T); response_ids, mask: (B, T);
    old_logprobs, ref_logprobs, values, advantages, returns, kl: (B, T); scores: (B,) reward
    model scores; seq_rewards: (B,) scores with the length penalties applied.
    """

    sequences: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    response_ids: torch.Tensor
    mask: torch.Tensor
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    kl: torch.Tensor
    scores: torch.Tensor
    seq_rewards: torch.Tensor

    def select(self, idx: torch.Tensor) -> Experience:
        return Experience(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


def sequence_rewards(
    scores: torch.Tensor,
    rollout: Rollout,
    missing_eos_penalty: float | None,
    overlong_cache: int | None,
) -> torch.Tensor:
    """S_b: reward-model scores (B,) with the optional length penalties. Returns (B,)."""
    out = scores.float().clone()
    if missing_eos_penalty:
        out = out - missing_eos_penalty * rollout.truncated.float()
    if overlong_cache:
        from trl.rewards import get_soft_overlong_punishment

        cache = min(int(overlong_cache), rollout.limit)
        punish = get_soft_overlong_punishment(
            max_completion_len=rollout.limit, soft_punish_cache=cache
        )
        lengths = rollout.lengths.tolist()
        out = out + torch.tensor(punish([[0] * n for n in lengths]), dtype=out.dtype)
    return out


def shape_rewards(
    seq_rewards: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Per-token rewards: -kl_coef * kl everywhere, plus S_b on each row's last valid token.

    Args:
        seq_rewards: (B,); kl: (B, T) per-token KL estimates; mask: (B, T).
    Returns:
        (B, T) rewards, 0 at masked positions.
    """
    m = mask.float()
    rewards = -kl_coef * torch.where(mask.bool(), kl, 0.0) * m
    last = (m.sum(1).long() - 1).clamp(min=0)
    rewards[torch.arange(len(last)), last] += seq_rewards.float()
    return rewards


@torch.no_grad()
def policy_forward(model, seq, attn, pos, resp, temperature: float, chunk: int):
    """Log-probs of `resp` (B, T) under `model`, in chunks of rows.

    Args:
        model: an ActorCritic (returns logits and values) or a causal LM (the reference).
        seq, attn, pos: (B, P + T) tokens, attention mask, position ids; resp: (B, T).
    Returns:
        logprobs (B, T), and values (B, T) for an ActorCritic (None for a causal LM).
    """
    t, ac = resp.shape[1], _is_actor_critic(model)
    lps, vals = [], []
    for i in range(0, seq.shape[0], chunk):
        x, s = (seq[i : i + chunk], attn[i : i + chunk], pos[i : i + chunk]), slice(i, i + chunk)
        if ac:
            logits, values = model(*x, t)
            vals.append(values)
        else:
            kw = {"use_cache": False, "logits_to_keep": t + 1}
            logits = model(input_ids=x[0], attention_mask=x[1], position_ids=x[2], **kw).logits
            logits = logits[:, :-1]
        lps.append(ppo.logprobs_from_logits(logits / temperature, resp[s]))
    return torch.cat(lps), (torch.cat(vals) if vals else None)


@torch.no_grad()
def critic_forward(model, seq, attn, pos, n_resp: int, chunk: int) -> torch.Tensor:
    """Values (B, n_resp) of an ActorCritic's critic alone, as its `forward` computes them."""
    critic = getattr(model, "module", model).critic
    x = (seq[:, :-1], attn[:, :-1], pos[:, :-1])
    vals = [critic(*(v[i : i + chunk] for v in x), n_resp) for i in range(0, seq.shape[0], chunk)]
    return torch.cat(vals)


def _values(model, seq, attn, pos, n: int, chunk: int, head: Any) -> torch.Tensor:
    """Critic values (B, n): `head.values` on its rows, a no-grad critic forward on the rest."""
    if head is None:
        return critic_forward(model, seq, attn, pos, n, chunk)
    values = torch.zeros(seq.shape[0], n, device=seq.device)
    rest = torch.ones(seq.shape[0], dtype=torch.bool, device=seq.device)
    rest[head.rows] = False
    if rest.any():
        values[rest] = critic_forward(model, seq[rest], attn[rest], pos[rest], n, chunk)
    values[head.rows, : head.t] = head.values.detach().float()
    return values


def _is_actor_critic(model) -> bool:
    inner = getattr(model, "module", model)  # DDP / DeepSpeed engines wrap the module
    return hasattr(inner, "critic") and hasattr(inner, "policy")


def make_experience(
    model,
    ref_model,
    rollout: Rollout,
    scores: torch.Tensor,
    c: CoarseConf,
    kl_coef: float,
    head: Any = None,
) -> Experience:
    """Score a rollout whose reward-model `scores` (B,) are finite (module docstring).

    The old log-probs are the rollout's own (`Rollout.logprobs`, taken while sampling from
    this same policy: equal to a second forward to float tolerance) when it has them; then the
    rows of `head` (coarse/update.py: a forward already run on them) take their old values from it.

    `c` is the `coarse` config (kl_estimator, gamma, lam, temperature, whiten_advantages,
    missing_eos_penalty, overlong_cache, forward_batch_size).
    """
    seq, attn = rollout.sequences, rollout.attention_mask
    pos = position_ids(attn)
    resp, mask = rollout.response_ids, rollout.response_mask
    fwd = (seq, attn, pos, resp, c.temperature, c.forward_batch_size)
    if rollout.logprobs is not None and _is_actor_critic(model):  # sampled by this policy
        logp = rollout.logprobs
        values = _values(model, seq, attn, pos, resp.shape[1], c.forward_batch_size, head)
    else:
        logp, values = policy_forward(model, *fwd)
    ref_logp, _ = policy_forward(ref_model, *fwd)
    m = mask.bool()
    logp, ref_logp = logp.masked_fill(~m, 0.0), ref_logp.masked_fill(~m, 0.0)
    values = values.masked_fill(~m, 0.0)
    kl = ppo.kl_penalty(logp, ref_logp, c.kl_estimator).masked_fill(~m, 0.0)
    seq_rewards = sequence_rewards(scores, rollout, c.missing_eos_penalty, c.overlong_cache)
    rewards = shape_rewards(seq_rewards, kl, mask, kl_coef)
    adv, returns = ppo.gae(rewards, values, mask, c.gamma, c.lam)
    if c.whiten_advantages:
        adv = ppo.masked_whiten(adv, mask)
    out = (seq, attn, pos, resp, mask, logp, ref_logp, values, adv, returns, kl)
    return Experience(*out, scores.float(), seq_rewards)


def check_scores(scores: torch.Tensor, bad_so_far: int, max_bad: int, step: int) -> bool:
    """True if every score is finite. Otherwise log, and raise once `max_bad` is exceeded.

    Args:
        scores: (N,) reward-model scores of a batch (all processes' scores, gathered).
        bad_so_far: bad batches before this one.
    """
    finite = bool(torch.isfinite(scores).all())
    if finite:
        return True
    n_bad = int((~torch.isfinite(scores)).sum())
    msg = "step %d: %d of %d rewards are NaN/inf; batch skipped (%d bad so far)"
    log.warning(msg, step, n_bad, scores.numel(), bad_so_far + 1)
    if bad_so_far + 1 > max_bad:
        raise NonFiniteRewardError(
            f"{bad_so_far + 1} batches had NaN/inf rewards (coarse.max_bad_batches={max_bad}); "
            "check the reward model (coarse.reward_model) or its inputs"
        )
    return False


def make_reward_fn(
    rm, rm_tok, policy_tok, batch_size: int
) -> Callable[[list[str], Rollout], torch.Tensor]:
    """reward_fn(prompts, rollout) -> (B,) reward-model scores of the decoded responses.

    The reward model reads text, so it may have its own tokenizer; responses are decoded
    without special tokens (EOS is implicit in the text ending).
    """
    from c2f_exp.reward.model import score_texts

    def reward_fn(prompts: list[str], rollout: Rollout) -> torch.Tensor:
        texts = decode_responses(policy_tok, rollout)
        return score_texts(rm, rm_tok, prompts, texts, batch_size).float().cpu()

    return reward_fn


def decode_responses(tok, rollout: Rollout) -> list[str]:
    """The B responses as text, without special tokens (EOS is implicit in the ending)."""
    return [
        tok.decode(r[m.bool()], skip_special_tokens=True)
        for r, m in zip(rollout.response_ids, rollout.response_mask, strict=True)
    ]


def load_prompts(cfg: Any, prepared: Path | None) -> tuple[list[str], list, list[dict]]:
    """The PPO prompt set of the run's data source (`data.source`, c2f_exp/sources.py).

    Args:
        cfg: the root config (`data`, `coarse`).
        prepared: the `prepare` artifact (tiny world), None for hub data.
    Returns:
        policy prompts (plain text), what the reward model reads for each (the same text, or
        chat turns for hub data), and held-out rows {"prompt", "entity"} for the gold check.
    Raises:
        EmptyPromptSetError naming the source when there are no prompts.
    """
    from c2f_exp.sources import source_for

    texts, turns, held, where = source_for(cfg).ppo_prompts(cfg, prepared)
    if not texts:
        c = cfg.coarse
        msg = f"the PPO prompt set {where} is empty (coarse.prompt_split={c.prompt_split})"
        raise EmptyPromptSetError(f"{msg}; point it at a non-empty prompt set")
    return texts, turns, held
