"""Rollouts under a length limit: left padding, KV cache, EOS stops, truncation flags."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM

from c2f_exp.coarse.rollout import encode_prompts, generate, position_ids

PAD, BOS, EOS, V = 0, 1, 2, 20


@pytest.fixture(scope="module")
def lm() -> MistralForCausalLM:
    torch.manual_seed(0)
    cfg = MistralConfig(
        vocab_size=V,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=128,
        sliding_window=None,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )
    return MistralForCausalLM(cfg).eval()


class ScriptedLM(torch.nn.Module):
    """Emits `script[row][t]` at step t (one-hot logits); records the calls it gets."""

    def __init__(self, script: list[list[int]]):
        super().__init__()
        self.script, self.calls = script, []

    def forward(self, input_ids, attention_mask, position_ids, use_cache, past_key_values=None):
        step = len(self.calls)
        self.calls.append((input_ids.shape, attention_mask.shape, position_ids.clone()))
        logits = torch.full((input_ids.shape[0], input_ids.shape[1], V), -1e9)
        for r, seq in enumerate(self.script):
            logits[r, -1, seq[min(step, len(seq) - 1)]] = 0.0
        return SimpleNamespace(logits=logits, past_key_values="cache")


def test_encode_prompts_left_pads():
    vocab = {"a": 5, "b": 6, "c": 7}

    class Tok:
        pad_token_id = PAD

        def __call__(self, text, add_special_tokens):
            return SimpleNamespace(input_ids=[vocab[w] for w in text.split()])

    ids, mask = encode_prompts(Tok(), ["a b c", "c"], prefix="a ")
    assert ids.tolist() == [[5, 5, 6, 7], [PAD, PAD, 5, 7]]
    assert mask.tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    assert position_ids(mask).tolist() == [[0, 1, 2, 3], [0, 0, 0, 1]]


def test_eos_stops_rows_and_truncation_is_flagged():
    model = ScriptedLM([[5, 6, EOS], [7, 8, 9, 10, 11, 12], [EOS]])
    ids = torch.tensor([[3, 4], [PAD, 4], [3, 4]])
    ro = generate(model, ids, (ids != PAD).long(), limit=4, eos_id=EOS, pad_id=PAD, greedy=True)
    assert ro.response_ids.tolist() == [[5, 6, EOS, PAD], [7, 8, 9, 10], [EOS, PAD, PAD, PAD]]
    assert ro.response_mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert ro.truncated.tolist() == [False, True, False]
    assert ro.lengths.tolist() == [3, 4, 1] and ro.n_tokens == 8
    assert len(model.calls) == 4  # prompt + 3 cached steps; no forward after the last token
    assert model.calls[1][0] == (3, 1)  # one new token per step (KV cache)
    assert model.calls[1][2].tolist() == [[2], [1], [2]]  # positions skip the left padding
    assert ro.sequences.shape == (3, 6) and ro.attention_mask[1].tolist() == [0, 1, 1, 1, 1, 1]


def test_stops_early_when_every_row_ended():
    model = ScriptedLM([[5, EOS], [EOS]])
    ids = torch.tensor([[3], [4]])
    ro = generate(model, ids, torch.ones_like(ids), limit=50, eos_id=EOS, pad_id=PAD, greedy=True)
    assert ro.response_ids.shape == (2, 2) and not ro.truncated.any()
    with pytest.raises(ValueError, match="limit"):
        generate(model, ids, torch.ones_like(ids), limit=0, eos_id=EOS, pad_id=PAD)


def test_cached_left_padded_decoding_matches_full_recompute(lm):
    """Greedy tokens with the KV cache and left padding == a cache-free loop per row."""
    prompts = [[BOS, 5, 6, 7, 8], [BOS, 9], [BOS, 11, 12]]
    width = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    ro = generate(lm, ids, (ids != PAD).long(), limit=12, eos_id=EOS, pad_id=PAD, greedy=True)
    for r, p in enumerate(prompts):
        seq = torch.tensor([p])
        for _ in range(int(ro.lengths[r])):
            nxt = lm(input_ids=seq).logits[0, -1].argmax()
            seq = torch.cat([seq, nxt.view(1, 1)], 1)
        assert seq[0, len(p) :].tolist() == ro.response_ids[r, : int(ro.lengths[r])].tolist()


def test_sampling_respects_limit_and_seed(lm):
    ids = torch.tensor([[BOS, 5], [BOS, 6]])
    torch.manual_seed(3)
    a = generate(lm, ids, torch.ones_like(ids), limit=7, eos_id=EOS, pad_id=PAD, top_k=5)
    torch.manual_seed(3)
    b = generate(lm, ids, torch.ones_like(ids), limit=7, eos_id=EOS, pad_id=PAD, top_k=5)
    assert a.response_ids.shape[1] <= 7 and torch.equal(a.response_ids, b.response_ids)
    assert lm.training is False
