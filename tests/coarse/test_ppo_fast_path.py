"""The optimised PPO path equals the plain one: lean decoding, rollout-time log-probs.

* `decode.LeanDecoder` samples exactly the tokens the model's own per-token `forward` loop
  samples (same seed), for Mistral (grouped-query attention) and Llama (multi-head), with left
  padding; its log-probs equal a second full forward's to float tolerance.
* `make_experience` with the rollout's log-probs and the reused first-minibatch forward
  (coarse/update.py) equals the plain one (second policy+critic forward), and so does the PPO
  update computed from each, on a fixed batch.
* Whole iterations with every speed-up on and off give the same trace and weights.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

from c2f_exp.coarse import decode
from c2f_exp.coarse.experience import make_experience, policy_forward
from c2f_exp.coarse.rollout import generate, position_ids
from tests.helpers.coarse import _trainer, build_micro_world

PAD, BOS, EOS, V = 0, 1, 2, 40
ATOL = 1e-5


def _lm(family: str, kv_heads: int):
    torch.manual_seed(0)
    kw = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2)
    kw.update(num_attention_heads=4, num_key_value_heads=kv_heads, head_dim=8)
    kw.update(max_position_embeddings=128, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS)
    if family == "mistral":
        return MistralForCausalLM(MistralConfig(sliding_window=None, **kw)).eval()
    return LlamaForCausalLM(LlamaConfig(**kw)).eval()


def _prompts() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, V, (6, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :3], mask[4, :6] = 0, 0  # left padding of different widths
    return ids.masked_fill(mask == 0, PAD), mask


@pytest.mark.parametrize("family, kv", [("mistral", 2), ("llama", 4)])
@pytest.mark.parametrize("greedy", [True, False])
def test_lean_decoder_samples_what_the_forward_loop_samples(family, kv, greedy):
    lm, (ids, mask) = _lm(family, kv), _prompts()
    assert decode.supports(lm, ids.shape[1] + 40)
    out = {}
    for lean in (True, False):
        torch.manual_seed(11)
        out[lean] = generate(lm, ids, mask, 40, EOS, PAD, 0.8, 0, greedy, lean, logprobs=True)
    a, b = out[True], out[False]
    assert torch.equal(a.response_ids, b.response_ids)
    assert torch.equal(a.response_mask, b.response_mask)
    assert torch.equal(a.truncated, b.truncated)
    m = a.response_mask.bool()
    torch.testing.assert_close(a.logprobs[m], b.logprobs[m], atol=ATOL, rtol=0)
    # ... and both equal what a second, full forward computes (PPO's plain old log-probs)
    seq, attn = a.sequences, a.attention_mask
    full, _ = policy_forward(lm, seq, attn, position_ids(attn), a.response_ids, 0.8, 64)
    torch.testing.assert_close(a.logprobs[m], full[m], atol=ATOL, rtol=0)


def test_lean_decoder_declines_what_it_does_not_reproduce():
    lm = _lm("mistral", 2)
    assert decode.supports(lm, 100)
    lm.config.sliding_window = 16  # a window shorter than the rollout: the model's own path
    assert not decode.supports(lm, 100) and decode.supports(lm, 16)
    assert not decode.supports(torch.nn.Linear(2, 2), 10)


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> dict:
    return build_micro_world(tmp_path_factory.mktemp("fast_path_world"))


def _toy_reward(prompts, ro):
    even = ((ro.response_ids % 2 == 0) & ro.response_mask.bool()).sum(1).float()
    return even / ro.response_mask.sum(1)


@pytest.mark.parametrize("minibatch", [4, 8])  # 8: the whole batch is the head minibatch
def test_optimised_update_equals_plain_update_on_a_fixed_batch(micro, tmp_path, minibatch):
    over = {"batch_size": 8, "minibatch_size": minibatch, "ppo_epochs": 2, "lr": 3e-3}
    tr, tok, _ = _trainer(micro, tmp_path, _toy_reward, over)
    c, idx = tr.c, tr.step_prompts(0)
    from c2f_exp.coarse.rollout import encode_prompts

    ids, mask = encode_prompts(tok, [tr.prompts[i] for i in idx], tr.prefix)
    torch.manual_seed(5)
    ro = tr.engine.generate(tr.model.policy, ids, mask, 16, tok.eos_token_id, tok.pad_token_id)
    assert ro.logprobs is not None  # the default engine hands PPO its sampling log-probs
    scores = _toy_reward(None, ro)
    start = (copy.deepcopy(tr.model.state_dict()), copy.deepcopy(tr.opt.state_dict()))

    # optimised: old log-probs from sampling; epoch 0's first minibatch forward run once, before
    # the experience (which takes that minibatch's old values from it), reused by the update
    torch.manual_seed(7)  # the minibatch permutations
    perm0, head = tr._head(ro)
    assert head is not None and head.values.requires_grad
    fast = make_experience(tr.model, tr.ref, ro, scores, c, 0.05, head)
    s_fast = tr.update(fast, perm0, head)
    w_fast = {k: v.clone() for k, v in tr.model.state_dict().items()}

    # plain: a second policy+critic forward for old log-probs and values, every forward anew
    tr.model.load_state_dict(start[0])
    tr.opt.load_state_dict(start[1])
    plain = make_experience(
        tr.model, tr.ref, dataclasses.replace(ro, logprobs=None), scores, c, 0.05
    )
    torch.manual_seed(7)
    s_plain = tr.update(plain)
    w_plain = tr.model.state_dict()

    for f in dataclasses.fields(fast):
        torch.testing.assert_close(
            getattr(fast, f.name), getattr(plain, f.name), atol=ATOL, rtol=0
        )
    assert s_plain.keys() == s_fast.keys()
    for k in s_plain.keys() - {"clipfrac", "vf_clipfrac"}:  # these count ties (clipped ==
        assert s_fast[k] == pytest.approx(s_plain[k], abs=1e-4), k  # unclipped) by rounding
    assert any(not torch.equal(w_plain[k], start[0][k]) for k in w_plain)  # it did update
    for k in w_plain:  # Adam divides by sqrt(v): rounding-level gradient differences move a
        # near-zero-gradient weight by up to ~1e-5 (lr 3e-3); a wrong or stale forward: ~lr
        torch.testing.assert_close(w_fast[k], w_plain[k], atol=1e-4, rtol=0)


def test_iterations_with_and_without_speedups_agree(micro, tmp_path):
    """Two iterations, every speed-up on vs. off (the plain path): same trace and weights."""
    over = {"steps": 2, "batch_size": 8, "minibatch_size": 4, "checkpoint_every": 100}
    plain = {"rollout": {"lean_decode": False, "reuse_logprobs": False}}  # (and no head reuse)
    out = []
    for extra in ({}, plain):
        tr, _, _ = _trainer(micro, tmp_path / str(len(out)), _toy_reward, {**over, **extra})
        torch.manual_seed(0)
        state = tr.train()
        out.append((state.trace, tr.model.state_dict()))
    (t_fast, w_fast), (t_plain, w_plain) = out
    for a, b in zip(t_fast, t_plain, strict=True):
        assert a["tokens"] == b["tokens"] and a["reward"] == b["reward"]
        for k in ("kl", "value", "pg_loss", "vf_loss", "entropy", "approx_kl"):
            assert a[k] == pytest.approx(b[k], abs=1e-4), k
    for k in w_plain:
        torch.testing.assert_close(w_fast[k], w_plain[k], atol=1e-4, rtol=0)
