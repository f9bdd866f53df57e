"""PPO math (c2f_exp.coarse.ppo): hand-computed values and properties."""

from __future__ import annotations

import math

import pytest
import torch

from c2f_exp.coarse import ppo

LN2 = math.log(2.0)


def test_logprobs_and_entropy_by_hand():
    # logits (0, 0, ln 2) -> softmax (1/4, 1/4, 1/2)
    logits = torch.tensor([[[0.0, 0.0, LN2], [0.0, 0.0, LN2]]])
    lp = ppo.logprobs_from_logits(logits, torch.tensor([[2, 0]]))
    assert lp.dtype == torch.float32
    torch.testing.assert_close(lp, torch.tensor([[math.log(0.5), math.log(0.25)]]))
    # H = -(2 * 1/4 ln 1/4 + 1/2 ln 1/2) = 1.5 ln 2
    torch.testing.assert_close(ppo.entropy_from_logits(logits), torch.full((1, 2), 1.5 * LN2))


def test_logprobs_match_log_softmax_and_are_float32():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g)
    labels = torch.randint(0, 11, (2, 5), generator=g)
    ref = torch.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1)
    torch.testing.assert_close(ppo.logprobs_from_logits(logits, labels), ref)
    assert ppo.logprobs_from_logits(logits.bfloat16(), labels).dtype == torch.float32


def test_masked_mean_and_var_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # valid: 1, 2, 4 -> mean 7/3; per row: 1.5 and 4
    torch.testing.assert_close(ppo.masked_mean(x, mask), torch.tensor(7 / 3))
    torch.testing.assert_close(ppo.masked_mean(x, mask, dim=1), torch.tensor([1.5, 4.0]))
    # squared deviations 16/9 + 1/9 + 25/9 = 14/3 -> biased 14/9, unbiased 14/6
    torch.testing.assert_close(ppo.masked_var(x, mask, unbiased=False), torch.tensor(14 / 9))
    torch.testing.assert_close(ppo.masked_var(x, mask), torch.tensor(7 / 3))


def test_masked_positions_are_ignored_even_when_nan():
    x = torch.tensor([[1.0, 2.0, float("nan")], [4.0, float("inf"), -float("inf")]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    torch.testing.assert_close(ppo.masked_mean(x, mask), torch.tensor(7 / 3))
    torch.testing.assert_close(ppo.masked_var(x, mask), torch.tensor(7 / 3))
    w = ppo.masked_whiten(x, mask)
    assert torch.isfinite(w).all() and (w[~mask] == 0).all()


def test_masked_var_with_one_element_is_zero_not_inf():
    assert ppo.masked_var(torch.tensor([3.0, 9.0]), torch.tensor([1, 0])).item() == 0.0


def test_whiten_zero_mean_unit_variance():
    g = torch.Generator().manual_seed(1)
    x = 5 + 3 * torch.randn(4, 9, generator=g)
    mask = torch.rand(4, 9, generator=g) > 0.3
    w = ppo.masked_whiten(x, mask)
    assert abs(ppo.masked_mean(w, mask).item()) < 1e-5
    assert ppo.masked_var(w, mask).item() == pytest.approx(1.0, abs=1e-4)
    kept = ppo.masked_whiten(x, mask, shift_mean=False)  # scale only: mean restored
    assert ppo.masked_mean(kept, mask).item() == pytest.approx(
        ppo.masked_mean(x, mask).item(), abs=1e-4
    )


def test_kl_estimators_by_hand():
    logp, ref = torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]])
    # k1 = ln 0.5 - ln 0.25 = ln 2; k2 = (ln 2)^2 / 2; k3 with r = 0.25/0.5: (0.5-1) - ln 0.5
    torch.testing.assert_close(ppo.kl_penalty(logp, ref, "k1"), torch.tensor([[LN2]]))
    torch.testing.assert_close(ppo.kl_penalty(logp, ref, "k2"), torch.tensor([[LN2**2 / 2]]))
    torch.testing.assert_close(ppo.kl_penalty(logp, ref, "k3"), torch.tensor([[LN2 - 0.5]]))
    with pytest.raises(ValueError, match="k1, k2, k3"):
        ppo.kl_penalty(logp, ref, "k9")


def test_k1_and_k3_are_unbiased_and_k3_nonnegative():
    # pi = (1/2, 1/4, 1/4), ref = (1/4, 1/4, 1/2): KL(pi||ref) = 1/2 ln 2 - 1/4 ln 2 = 1/4 ln 2
    pi, ref = torch.tensor([0.5, 0.25, 0.25]), torch.tensor([0.25, 0.25, 0.5])
    for kind in ("k1", "k3"):
        est = ppo.kl_penalty(pi.log()[None], ref.log()[None], kind)[0]
        assert (pi * est).sum().item() == pytest.approx(0.25 * LN2, abs=1e-6), kind
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(50, 7, generator=g), torch.randn(50, 7, generator=g)
    assert (ppo.kl_penalty(a, b, "k3") >= 0).all()


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 5.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.5, 0.6, float("nan")]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = ppo.gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # row 0: d2 = 1 - 0.7 = 0.3 -> A2 = 0.3; d1 = 0.7 - 0.6 = 0.1 -> A1 = 0.1 + 0.5*0.3 = 0.25
    #        d0 = 0.6 - 0.5 = 0.1 -> A0 = 0.1 + 0.5*0.25 = 0.225
    # row 1 (ends at t=1, the 5.0 and NaN are padding): d1 = 1 - 0.6 = 0.4 -> A1 = 0.4;
    #        d0 = 0.6 - 0.5 = 0.1 -> A0 = 0.1 + 0.5*0.4 = 0.3
    torch.testing.assert_close(adv, torch.tensor([[0.225, 0.25, 0.3], [0.3, 0.4, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.725, 0.85, 1.0], [0.8, 1.0, 0.0]]))


def test_gae_discounted_by_hand():
    # gamma 0.5, lam 1: d1 = 2 - 1 = 1, A1 = 1; d0 = 0 + 0.5*1 - 1 = -0.5, A0 = -0.5 + 0.5*1 = 0
    adv, _ = ppo.gae(
        torch.tensor([[0.0, 2.0]]),
        torch.tensor([[1.0, 1.0]]),
        torch.ones(1, 2),
        gamma=0.5,
        lam=1.0,
    )
    torch.testing.assert_close(adv, torch.tensor([[0.0, 1.0]]))


def test_gae_lambda_one_gamma_one_is_reward_to_go_minus_value():
    g = torch.Generator().manual_seed(3)
    r, v = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    lengths = [8, 5, 1]
    mask = torch.tensor([[1] * n + [0] * (8 - n) for n in lengths])
    adv, ret = ppo.gae(r, v, mask, gamma=1.0, lam=1.0)
    for i, n in enumerate(lengths):
        to_go = r[i, :n].flip(0).cumsum(0).flip(0)
        torch.testing.assert_close(adv[i, :n], to_go - v[i, :n])
        torch.testing.assert_close(ret[i, :n], to_go)
        assert (adv[i, n:] == 0).all() and (ret[i, n:] == 0).all()


def _gae_loop(r: list[float], v: list[float], gamma: float, lam: float) -> list[float]:
    out, last = [0.0] * len(r), 0.0
    for t in reversed(range(len(r))):
        nv = v[t + 1] if t + 1 < len(r) else 0.0
        last = r[t] + gamma * nv - v[t] + gamma * lam * last
        out[t] = last
    return out


def test_gae_skips_masked_holes_and_matches_reference_loop():
    g = torch.Generator().manual_seed(4)
    r, v = torch.randn(2, 6, generator=g), torch.randn(2, 6, generator=g)
    mask = torch.tensor([[1, 0, 1, 1, 0, 1], [0, 0, 1, 1, 1, 1]]).bool()  # holes, left pad
    adv, _ = ppo.gae(r, v, mask, gamma=0.9, lam=0.8)
    for i in range(2):
        want = _gae_loop(r[i][mask[i]].tolist(), v[i][mask[i]].tolist(), 0.9, 0.8)
        torch.testing.assert_close(adv[i][mask[i]], torch.tensor(want))
        assert (adv[i][~mask[i]] == 0).all()


def _policy_case():
    # tokens: (A, ratio) = (+1, 1.5), (+1, 0.5), (-1, 0.5), (-1, 1.5); clip 0.2
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    old = torch.zeros(1, 4)
    logp = torch.tensor([[1.5, 0.5, 0.5, 1.5]]).log().requires_grad_()
    return logp, old, adv


def test_policy_loss_by_hand():
    logp, old, adv = _policy_case()
    loss, clipfrac, approx_kl = ppo.policy_loss(logp, old, adv, torch.ones(1, 4), clip=0.2)
    # per token max(-A r, -A clip(r)): -1.2 (clipped), -0.5, 0.8 (clipped), 1.5 -> mean 0.15
    assert loss.item() == pytest.approx(0.15, abs=1e-6)
    assert clipfrac.item() == pytest.approx(0.5)
    # k3: (r-1) - ln r = 0.5 - ln 1.5 (twice) and -0.5 + ln 2 (twice)
    want_kl = (2 * (0.5 - math.log(1.5)) + 2 * (LN2 - 0.5)) / 4
    assert approx_kl.item() == pytest.approx(want_kl, abs=1e-6)
    loss.backward()
    # d/dlogp of -A r / 4 = -A r / 4 where unclipped; 0 where the clipped term is active
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -0.125, 0.0, 0.375]]))


@pytest.mark.parametrize("adv_sign", [1.0, -1.0])
def test_policy_gradient_stops_exactly_past_the_clip_edge(adv_sign):
    clip, d = 0.2, 1e-3
    edge = 1 + clip if adv_sign > 0 else 1 - clip  # the edge past which a gain is clipped
    inside, outside = edge - adv_sign * d, edge + adv_sign * d
    logp = torch.tensor([[inside, outside]]).log().requires_grad_()
    loss, clipfrac, _ = ppo.policy_loss(
        logp, torch.zeros(1, 2), torch.full((1, 2), adv_sign), torch.ones(1, 2), clip
    )
    loss.backward()
    assert logp.grad[0, 0].item() == pytest.approx(-adv_sign * inside / 2, rel=1e-5)
    assert logp.grad[0, 1].item() == 0.0
    assert clipfrac.item() == pytest.approx(0.5)


def test_policy_loss_ignores_masked_tokens():
    logp, old, adv = _policy_case()
    mask = torch.tensor([[1, 1, 0, 0]])
    loss, clipfrac, _ = ppo.policy_loss(logp, old, adv, mask, 0.2)
    assert loss.item() == pytest.approx((-1.2 - 0.5) / 2, abs=1e-6)
    assert clipfrac.item() == pytest.approx(0.5)


def test_value_loss_by_hand():
    old = torch.zeros(1, 4)
    values = torch.tensor([[0.5, 0.5, 0.5, -0.5]], requires_grad=True)
    returns = torch.tensor([[1.0, 0.1, 0.4, -1.0]])
    loss, clipfrac = ppo.value_loss(values, old, returns, torch.ones(1, 4), clip=0.2)
    # clipped values (0.2, 0.2, 0.2, -0.2); squared errors unclipped / clipped:
    # (0.25 / 0.64) (0.16 / 0.01) (0.01 / 0.04) (0.25 / 0.64) -> max 0.64 0.16 0.04 0.64
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.16 + 0.04 + 0.64) / 4, abs=1e-6)
    assert clipfrac.item() == pytest.approx(0.75)
    loss.backward()  # only token 1 (unclipped error larger) gets a gradient: 0.5*2*(0.5-0.1)/4
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, 0.1, 0.0, 0.0]]))


def test_fixed_kl_controller_never_moves():
    c = ppo.build_kl_controller("fixed", 0.05, None, 100)
    c.update(100.0, 64)
    assert c.value == 0.05


def test_adaptive_kl_by_hand():
    c = ppo.AdaptiveKLController(0.1, target=6.0, horizon=10000)
    c.update(9.0, 256)  # error 9/6 - 1 = 0.5, clipped to 0.2: x (1 + 0.2 * 256 / 10000)
    assert c.value == pytest.approx(0.1 * 1.00512)
    c = ppo.AdaptiveKLController(0.1, target=6.0, horizon=10000)
    c.update(6.6, 256)  # error 0.1 (inside the clip): x (1 + 0.1 * 0.0256)
    assert c.value == pytest.approx(0.1 * 1.00256)


def test_adaptive_kl_direction_and_bound():
    g = torch.Generator().manual_seed(5)
    for kl in (torch.rand(200, generator=g) * 30).tolist():
        c = ppo.AdaptiveKLController(0.2, target=6.0, horizon=1000)
        c.update(kl, 50)
        factor = c.value / 0.2
        assert 1 - 0.2 * 50 / 1000 - 1e-12 <= factor <= 1 + 0.2 * 50 / 1000 + 1e-12
        if kl > 6.0:
            assert factor > 1
        elif kl < 6.0:
            assert factor < 1
    c = ppo.AdaptiveKLController(0.2, 6.0, 1000)
    c.update(float("nan"), 50)
    assert c.value == 0.2


def test_kl_controller_state_round_trip():
    a = ppo.build_kl_controller("adaptive", 0.1, 4.0, 500)
    for kl in (1.0, 9.0, 3.0):
        a.update(kl, 32)
    b = ppo.build_kl_controller("adaptive", 1.0, 1.0, 1)
    b.load_state_dict(a.state_dict())
    a.update(5.0, 32)
    b.update(5.0, 32)
    assert a.value == b.value and b.target == 4.0 and b.horizon == 500


def test_bad_kl_controller_arguments():
    with pytest.raises(ValueError, match="fixed or adaptive"):
        ppo.build_kl_controller("pid", 0.1, 1.0, 10)
    with pytest.raises(ValueError, match="target"):
        ppo.build_kl_controller("adaptive", 0.1, None, 10)
    with pytest.raises(ValueError, match="target"):
        ppo.AdaptiveKLController(0.1, 0.0, 10)
