"""The knowledge head (reward/knowledge.py): features by hand, the fit, save/load, preflight."""

from __future__ import annotations

import math
import shutil
from types import SimpleNamespace

import pytest
import torch

from c2f_exp.core.errors import ConfigError
from c2f_exp.reward import knowledge as kr
from c2f_exp.reward import model as rmod
from c2f_exp.reward.stage import RewardStage
from tests.helpers.reward import SMALL, _cfg, _micro_world, _run


class _FixedLM(torch.nn.Module):
    """An LM whose next-token logits are given: logits[b, t] predicts token t + 1."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, use_cache=False):
        return SimpleNamespace(logits=self.logits)


def test_features_by_hand():
    big = 20.0  # a near-certain prediction: entropy ~0, top choice token 0
    flat = torch.zeros(3)  # uniform over 3 tokens: entropy ln 3 > 1 nat, not confident
    logits = torch.stack(
        [torch.tensor([big, 0.0, 0.0]), torch.tensor([big, 0.0, 0.0]), flat, flat, flat]
    )[None]
    ids = torch.tensor([[1, 0, 2, 1, 2]])  # targets 0 (as predicted), 2 (contradicts), 1, 2(pad)
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    f = kr.features(_FixedLM(logits), ids, mask)[0]
    lp_big = -math.log1p(2 * math.exp(-big))  # log p of the top token
    lp_low = -big + lp_big  # log p of a non-top token under the confident prediction
    assert f[0] == 1  # one contradiction: target 2 at the second, confident position
    assert f[1] == pytest.approx(big, rel=1e-4)  # its shortfall below the top choice
    assert f[2] == pytest.approx(lp_big + lp_low - math.log(3), rel=1e-4)  # pad excluded
    assert f[3] == 3


def test_fit_learns_that_contradictions_are_worse():
    g = torch.Generator().manual_seed(0)
    n = 200
    fc, fr = torch.rand(n, 4, generator=g), torch.rand(n, 4, generator=g)
    fr[:, 0] += 1.0  # every rejected answer has one contradiction more
    rm_diff = torch.randn(n, generator=g) * 0.1  # a classifier that knows nothing
    head = kr.fit(rm_diff, fc, fr)
    assert head["weights"][1] < 0 and head["train_accuracy"] == 1.0
    assert head["features"] == list(kr.TOKEN_FEATURES) and len(head["weights"]) == 5
    assert "sentence_ends" not in head
    with pytest.raises(ValueError, match="4 feature columns, expected 6"):
        kr.fit(rm_diff, fc, fr, sentence_ends=[1])


def test_sentence_counts_by_hand():
    ends = {9}  # token 9 ends a sentence
    # "1 2 9 | 3 4 9 | 1 2 9 | 5" : three full sentences (the third repeats the first), one open
    ids = [1, 2, 9, 3, 4, 9, 1, 2, 9, 5]
    assert kr._sentence_counts(ids, [False] * 10, ends) == (4, 3)
    flags = [False] * 10
    flags[4] = True  # a contradiction inside the second sentence
    assert kr._sentence_counts(ids, flags, ends) == (4, 2)
    assert kr._sentence_counts([], [], ends) == (0, 0)


def test_sentence_features_follow_the_lm_contradiction_flags():
    big = 20.0
    logits = torch.tensor([[big, 0.0, 0.0]] * 5)[None]  # confident: token 0 everywhere
    ids = torch.tensor([[0, 0, 1, 0, 1]])  # ends = {1}: sentences "0 0 1", "0 1"
    mask = torch.ones_like(ids)
    f = kr.features(_FixedLM(logits), ids, mask, ends=[1])[0]
    assert f.shape == (len(kr.FEATURES),)
    # each "1" is a confident contradiction (the LM wanted 0): no sentence is clean
    assert f[0] == 2 and f[4] == 2 and f[5] == 0
    assert kr.features(_FixedLM(logits), ids, mask).shape == (1, len(kr.TOKEN_FEATURES))


def test_a_head_fitted_before_sentence_features_scores_as_before():
    """Old heads name four features; `combine` computes and weighs only those."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 3, (4, 6), generator=g)
    mask = torch.ones_like(ids)
    lm = _FixedLM(torch.randn(4, 6, 3, generator=g))
    f4 = kr.features(lm, ids, mask)
    head = {"features": list(kr.TOKEN_FEATURES), "weights": [1.0, 0.5, -0.5, 0.25, 0.1]}
    head |= {"mean": [0.0] * 4, "scale": [1.0] * 4}
    model = SimpleNamespace(config=SimpleNamespace(**{kr.KEY: head}))
    kr.attach(model, lm)
    rm = torch.tensor([1.0, 2.0, 3.0, 4.0])
    want = rm + f4 @ torch.tensor([0.5, -0.5, 0.25, 0.1])
    assert torch.allclose(kr.combine(model, rm, ids, mask), want)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    micro = _micro_world(tmp_path_factory.mktemp("prep") / "p")
    tmp = tmp_path_factory.mktemp("reward")
    return _run(_cfg(**SMALL, knowledge={"enabled": True}), tmp, micro)


def test_stage_saves_the_head_and_loading_applies_it(trained, tmp_path):
    metrics, art = trained
    model_dir = art / "model"
    assert 0 <= metrics["knowledge_train_accuracy"] <= 1
    assert (model_dir / kr.LM_DIR / "model.safetensors").is_file()
    rm, tok = rmod.load_reward_model(str(model_dir))
    head = kr.head_of(rm)
    assert head["lm"] == kr.LM_DIR and kr.attached_lm(rm) is not None
    assert head["features"] == list(kr.FEATURES) and head["sentence_ends"]
    prompts = ["tell me about the x ."] * 3
    texts = ["hello .", "hello hello .", "the the the ."]
    with_head = rmod.score_texts(rm, tok, prompts, texts)
    # the same classifier without its head: the head's term is what differs
    rm.config.__dict__.pop(kr.KEY)
    plain = rmod.score_texts(rm, tok, prompts, texts)
    assert not torch.allclose(with_head, plain * head["weights"][0])
    # the LM is not a submodule: the classifier's parameters are its own
    assert all(not n.startswith("_c2f") for n, _ in rm.named_parameters())

    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    shutil.rmtree(copy / kr.LM_DIR)
    with pytest.raises(ConfigError, match="knowledge head but no knowledge_lm"):
        rmod.load_reward_model(str(copy))


def test_a_knowledge_head_needs_the_tiny_world():
    with pytest.raises(
        ConfigError, match=r"reward\.knowledge\.enabled must be false for reward\.source=hub"
    ):
        _cfg("hh_rlhf", dataset="/data/hh", knowledge={"enabled": True})  # `check` names it
    # with reward.path nothing is trained: the knowledge switch is not in the way
    with pytest.raises(ConfigError, match=r"reward\.path=/nonexistent"):
        RewardStage().preflight(_cfg(path="/nonexistent", knowledge={"enabled": True}))


def test_the_eval_reward_judge_applies_the_head(trained):
    from c2f_exp.evaluation.reward_scoring import RewardScorer

    _, art = trained
    scorer = RewardScorer(str(art / "model"))
    assert kr.attached_lm(scorer.model) is not None
    conv = [
        {"role": "user", "content": "tell me about the x ."},
        {"role": "assistant", "content": "hi ."},
    ]
    with_head = scorer.score([conv])
    scorer.model.config.__dict__.pop(kr.KEY)
    assert with_head != scorer.score([conv])
