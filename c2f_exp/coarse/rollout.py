"""Batched rollouts with the length limit in force (docs/method.md §2.1).

Prompts are left-padded so every row's last prompt token sits in the same column and new tokens
are appended in lock-step with a KV cache. A row stops at its first EOS (later columns are
padding, masked out); a row that reaches `limit` new tokens without EOS is *truncated* — the
statistic Continuous Maximization gates on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Rollout:
    """One batch of prompts and sampled responses.

    Attributes:
        prompt_ids: (B, P) left-padded prompt tokens.
        prompt_mask: (B, P) 1 for real prompt tokens.
        response_ids: (B, T) sampled tokens, `pad_id` after the first EOS; T <= limit.
        response_mask: (B, T) 1 for generated tokens up to and including the first EOS.
        truncated: (B,) bool, True where no EOS came within `limit` tokens.
        limit: the length limit the batch was generated under.
        logprobs: (B, T) float32 log-probs of the sampled tokens under softmax(logits / T) at
            sampling time (what PPO's old log-probs are; rows past EOS: junk), or None.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    truncated: torch.Tensor
    limit: int
    logprobs: torch.Tensor | None = None

    @property
    def sequences(self) -> torch.Tensor:
        """(B, P + T) prompt followed by response."""
        return torch.cat([self.prompt_ids, self.response_ids], 1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """(B, P + T)."""
        return torch.cat([self.prompt_mask, self.response_mask], 1)

    @property
    def lengths(self) -> torch.Tensor:
        """(B,) number of generated tokens per row (EOS included)."""
        return self.response_mask.sum(1)

    @property
    def n_tokens(self) -> int:
        return int(self.response_mask.sum())

    def select(self, idx: torch.Tensor) -> Rollout:
        """Rows `idx` (e.g. a rank's share of a batch)."""
        return Rollout(
            self.prompt_ids[idx],
            self.prompt_mask[idx],
            self.response_ids[idx],
            self.response_mask[idx],
            self.truncated[idx],
            self.limit,
            None if self.logprobs is None else self.logprobs[idx],
        )


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """(B, L) positions counting only real tokens, so left padding does not shift RoPE."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def encode_prompts(tok, prompts: list[str], prefix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize `prefix + prompt` without special tokens, left-padded.

    Returns:
        ids: (B, P) token ids; mask: (B, P) 1 for real tokens.
    """
    enc = [tok(prefix + p, add_special_tokens=False).input_ids for p in prompts]
    width = max(map(len, enc))
    ids = torch.full((len(enc), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(enc), width), dtype=torch.long)
    for i, e in enumerate(enc):
        if e:
            ids[i, width - len(e) :] = torch.tensor(e)
            mask[i, width - len(e) :] = 1
    return ids, mask


def _sample(logits: torch.Tensor, temperature: float, top_k: int, greedy: bool) -> torch.Tensor:
    """(B, V) logits -> (B,) token ids."""
    if greedy:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, -1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, -1), 1).squeeze(-1)


class _ForwardStepper:
    """Any causal LM with the HF cache interface: its full `forward` once per new token."""

    def __init__(self, model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor):
        self.model, self.mask = model, prompt_mask.clone()
        pos = position_ids(self.mask)
        out = model(
            input_ids=prompt_ids, attention_mask=self.mask, position_ids=pos, use_cache=True
        )
        self.prefill_logits, self.cache = out.logits[:, -1, :], out.past_key_values
        self.next_pos = pos[:, -1:] + 1

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed (B,) tokens; returns (B, V) next-token logits (rows past EOS: ignored later)."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(tokens.shape[0], 1)], 1)
        out = self.model(
            input_ids=tokens[:, None],
            attention_mask=self.mask,
            position_ids=self.next_pos,
            past_key_values=self.cache,
            use_cache=True,
        )
        self.cache, self.next_pos = out.past_key_values, self.next_pos + 1
        return out.logits[:, -1, :]


@torch.no_grad()
def generate(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    limit: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    top_k: int = 0,
    greedy: bool = False,
    lean: bool = True,
    logprobs: bool = False,
    stop: list[list[int]] | None = None,
) -> Rollout:
    """Sample up to `limit` new tokens per row with a KV cache; rows stop at EOS, or at a
    `stop` token sequence (the data source's turn marker, "\n\nHuman:": a base model that
    goes on to write the user's next turn has ended its reply; the marker stays in the row).

    Args:
        model: a causal LM (HF interface: input_ids, attention_mask, position_ids,
            past_key_values, use_cache) returning `.logits` (B, L, V).
        prompt_ids, prompt_mask: (B, P) left-padded prompts.
        limit: the rollout length limit l(t) (maximum new tokens).
        temperature, top_k: sampling settings (top_k=0: full distribution).
        greedy: argmax decoding (evaluation).
        lean: decode Llama-family models with `decode.LeanDecoder` (the same layers and
            sampling, without per-token `forward` overhead); other models use their `forward`.
        logprobs: also return each sampled token's log-prob under softmax(logits / temperature)
            (`Rollout.logprobs`), so PPO needs no second policy forward for its old log-probs.

    Returns:
        A `Rollout`; the loop ends early when every row has produced EOS.
    """
    from c2f_exp.coarse import decode

    if limit < 1:
        raise ValueError(f"rollout limit must be >= 1 (got {limit})")
    was_training = model.training
    model.eval()
    try:
        if lean and decode.supports(model, prompt_ids.shape[1] + limit):
            stepper = decode.LeanDecoder(model, prompt_ids, prompt_mask, limit)
        else:
            stepper = _ForwardStepper(model, prompt_ids, prompt_mask)
        sampling = (temperature, top_k, greedy, logprobs, stop or [])
        resp, alive, done, lps = _sample_loop(stepper, limit, eos_id, pad_id, *sampling)
    finally:
        model.train(was_training)
    return Rollout(prompt_ids, prompt_mask, resp, alive.long(), ~done, limit, lps)


def _sample_loop(stepper, limit, eos_id, pad_id, temperature, top_k, greedy, want_lp, stop):
    """Sample into preallocated (B, limit) buffers.

    Returns tokens, alive (B, n), done (B,), and log-probs (B, n) when `want_lp` (else None).
    """
    from c2f_exp.coarse.ppo import logprobs_from_logits

    logits, b = stepper.prefill_logits, stepper.prefill_logits.shape[0]
    dev = logits.device
    tokens = torch.full((b, limit), pad_id, dtype=torch.long, device=dev)
    alive = torch.zeros((b, limit), dtype=torch.bool, device=dev)
    lps = torch.zeros((b, limit), dtype=torch.float32, device=dev) if want_lp else None
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    n = 0
    for t in range(limit):
        nxt = _sample(logits, temperature, top_k, greedy).masked_fill(done, pad_id)
        tokens[:, t], alive[:, t], n = nxt, ~done, t + 1
        if lps is not None:  # as ppo_update computes it: the full softmax at this temperature
            lps[:, t] = logprobs_from_logits(logits[:, None] / temperature, nxt[:, None])[:, 0]
        done = done | (nxt == eos_id)
        for seq in stop:  # rows whose last len(seq) tokens are a stop sequence
            k = len(seq)
            if k <= t + 1:
                want = torch.tensor(seq, device=dev)
                done = done | (tokens[:, t + 1 - k : t + 1] == want).all(1)
        if t == limit - 1 or bool(done.all()):
            break
        logits = stepper.step(nxt)
    return tokens[:, :n], alive[:, :n], done, None if lps is None else lps[:, :n]


def stop_sequences(tok, marker: str | None) -> list[list[int]]:
    """The token sequences `marker` becomes after text (how a sampled reply would spell it),
    for `generate(stop=...)`; [] without a marker."""
    if not marker:
        return []
    out = []
    for ctx in ("x", "x.", "x\n"):
        a = tok(ctx, add_special_tokens=False).input_ids
        b = tok(ctx + marker, add_special_tokens=False).input_ids
        if b[: len(a)] == a and len(b) > len(a) and b[len(a) :] not in out:
            out.append(b[len(a) :])
    return out
