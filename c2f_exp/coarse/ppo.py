"""PPO math as pure functions on tensors (no models, no I/O).

Shapes: B = batch (sequences), T = response positions, V = vocabulary. `mask` is (B, T), 1 (or
True) where a response token exists and 0 at padding. Masked positions never influence a result:
they may even hold NaN/inf (padding logits, values past EOS).

References:
* Schulman et al. 2017, *Proximal Policy Optimization* (clipped surrogate, eq. 7).
* Schulman et al. 2016, *High-Dimensional Continuous Control Using GAE* (eq. 11-16).
* Ziegler et al. 2019, *Fine-Tuning Language Models from Human Preferences* (adaptive KL, §2.2).
* Schulman 2020, *Approximating KL Divergence* (estimators k1, k2, k3).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


def logprobs_from_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """log p(label) under softmax(logits), computed in float32.

    Args:
        logits: (B, T, V) next-token logits aligned with `labels`.
        labels: (B, T) token ids.
    Returns:
        (B, T) float32 log-probabilities.
    """
    logits = logits.float()
    picked = logits.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of softmax(logits): H = logsumexp(z) - sum_v p_v z_v.

    Args:
        logits: (B, T, V).
    Returns:
        (B, T) float32 entropies in nats.
    """
    logits = logits.float()
    p = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(-1)


def _valid(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    m = mask.bool()
    return torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device)), m.to(x.dtype)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `x` over positions where `mask` is set (0 where nothing is set).

    Args:
        x: any shape; mask: same shape.
        dim: reduce this dimension only; None reduces all.
    """
    xs, m = _valid(x, mask)
    if dim is None:
        return xs.sum() / m.sum().clamp_min(1.0)
    return xs.sum(dim) / m.sum(dim).clamp_min(1.0)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of `x` over the masked positions (scalar).

    With `unbiased`, Bessel's correction n/(n-1) is applied when n >= 2 valid elements; with
    fewer it returns the biased estimate (0 for one element) instead of dividing by zero.
    """
    mean = masked_mean(x, mask)
    xs, m = _valid(x - mean, mask)
    n = m.sum()
    var = (xs * xs).sum() / n.clamp_min(1.0)
    if unbiased and n >= 2:
        var = var * n / (n - 1)
    return var


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x - mean) / sqrt(var + eps) over masked positions; masked positions become 0.

    With `shift_mean=False` the mean is added back (scale only), as for rewards in PPO-RLHF.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return _valid(out, mask)[0]


def kl_penalty(logp: Tensor, ref_logp: Tensor, kind: str = "k1") -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman 2020).

    k1 = log pi - log pi_ref (unbiased, can be negative); k2 = 0.5 (log pi - log pi_ref)^2;
    k3 = (r - 1) - log r with r = pi_ref / pi (unbiased, always >= 0).

    Args:
        logp, ref_logp: (B, T) log-probs of the sampled tokens under the policy and reference.
    Returns:
        (B, T).
    """
    log_ratio = logp.float() - ref_logp.float()
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio.square()
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"kl estimator must be one of k1, k2, k3 (got {kind!r})")


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalised Advantage Estimation (Schulman et al. 2016, eq. 16).

    delta_t = r_t + gamma V_{t+1} - V_t;  A_t = delta_t + gamma lam A_{t+1}
    where t+1 is the next *valid* position of the row (masked positions are skipped, and the
    value after the last valid position is 0: the episode ends there).

    Args:
        rewards: (B, T) per-token rewards (e.g. -beta KL, plus the score on the last token).
        values: (B, T) critic values V(s_t).
        mask: (B, T) valid response positions.
    Returns:
        advantages (B, T) and returns = advantages + values (B, T), both 0 where masked.
    """
    m = mask.bool()
    rewards, values = rewards.float(), values.float()
    adv = torch.zeros_like(values)
    last_adv = torch.zeros_like(values[:, 0])
    next_value = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        a = delta + gamma * lam * last_adv
        valid = m[:, t]
        last_adv = torch.where(valid, a, last_adv)
        next_value = torch.where(valid, values[:, t], next_value)
        adv[:, t] = torch.where(valid, a, 0.0)
    returns = torch.where(m, adv + values, 0.0)
    return adv, returns


def policy_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, clip: float
) -> tuple[Tensor, Tensor, Tensor]:
    """PPO clipped surrogate (Schulman et al. 2017, eq. 7), as a loss to minimise.

    L = mean_t max(-A_t rho_t, -A_t clip(rho_t, 1-clip, 1+clip)),  rho_t = exp(logp - old_logp)

    Args:
        logp: (B, T) current log-probs (with grad); old_logp: (B, T) from the rollout.
        advantages: (B, T); mask: (B, T).
    Returns:
        loss (scalar), clip fraction (share of tokens where the clipped term is active),
        approx_kl = mean (rho - 1) - log rho (k3 of KL(old || new), >= 0).
    """
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = masked_mean(torch.expm1(log_ratio) - log_ratio, mask)
    return loss, clipfrac, approx_kl


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip: float
) -> tuple[Tensor, Tensor]:
    """Clipped value loss: 0.5 mean max((V - G)^2, (V_old + clip(V - V_old, +-clip) - G)^2).

    Args:
        values: (B, T) current critic values (with grad); old_values: (B, T) from the rollout.
        returns: (B, T) GAE returns; mask: (B, T).
    Returns:
        loss (scalar) and clip fraction (share of tokens where the clipped error is larger).
    """
    v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    err = (values - returns).square()
    err_clipped = (v_clipped - returns).square()
    loss = 0.5 * masked_mean(torch.maximum(err, err_clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((err_clipped > err).float(), mask)
    return loss, clipfrac


class FixedKLController:
    """Constant KL coefficient beta."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op (the coefficient is fixed)."""

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.value = float(d["value"])


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019, §2.2).

    e_t = clip(KL_t / target - 1, -0.2, 0.2);  beta <- beta (1 + e_t n_steps / horizon)
    so one update changes beta by a factor within [1 - 0.2 n/horizon, 1 + 0.2 n/horizon]; a
    non-finite KL leaves beta unchanged.
    """

    MAX_ERROR = 0.2

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        if not target > 0:
            raise ValueError(f"adaptive KL target must be > 0 (got {target!r})")
        if not horizon > 0:
            raise ValueError(f"adaptive KL horizon must be > 0 (got {horizon!r})")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        if not math.isfinite(current_kl):
            return
        err = min(max(current_kl / self.target - 1.0, -self.MAX_ERROR), self.MAX_ERROR)
        self.value *= 1.0 + err * n_steps / self.horizon

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.value, self.target, self.horizon = (
            float(d["value"]),
            float(d["target"]),
            int(d["horizon"]),
        )


def build_kl_controller(
    kind: str, kl_coef: float, target: float | None, horizon: int
) -> FixedKLController | AdaptiveKLController:
    """`fixed` -> FixedKLController(kl_coef); `adaptive` -> AdaptiveKLController(kl_coef, ...)."""
    if kind == "fixed":
        return FixedKLController(kl_coef)
    if kind == "adaptive":
        if target is None:
            raise ValueError("adaptive KL control needs a target KL (got None)")
        return AdaptiveKLController(kl_coef, target, horizon)
    raise ValueError(f"KL controller must be fixed or adaptive (got {kind!r})")
