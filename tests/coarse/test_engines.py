"""Rollout engines (coarse/engines.py): the vllm engine against a fake `vllm.LLM`, and its guards.

No vllm install here: the fake stands in for an in-process `LLM` (the model behind
`llm_engine.model_executor.driver_worker[.worker].model_runner.model`, with `load_weights`) and
for `SamplingParams`, so the weight sync, the sampling-parameter mapping and the packing of
vLLM's outputs into a `Rollout` are tested; running on a GPU is not.
"""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import pytest
import torch
from transformers import MistralForCausalLM

from c2f_exp.coarse import engines
from c2f_exp.coarse.engines import RolloutEngineUnavailableError, VLLMEngine, sampling_kwargs
from c2f_exp.core.errors import C2FError
from tests.conftest import tiny_mistral_config

PAD, BOS, EOS = 0, 1, 2


class FakeParams:
    """Records the keyword arguments `SamplingParams` would get."""

    def __init__(self, **kw):
        self.kw = kw


class FakeModel:
    def __init__(self):
        self.loads: list[dict[str, torch.Tensor]] = []

    def load_weights(self, weights):
        self.loads.append({k: v.clone() for k, v in weights})


class FakeLLM:
    """`generate` returns scripted token lists and finish reasons, one per prompt."""

    def __init__(self, script, v1: bool = False):
        self.script, self.calls, self.model = script, [], FakeModel()
        runner = SimpleNamespace(model_runner=SimpleNamespace(model=self.model))
        worker = SimpleNamespace(worker=runner) if v1 else runner
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=worker))

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append((prompts, params))
        return [
            SimpleNamespace(outputs=[SimpleNamespace(token_ids=t, finish_reason=r)])
            for t, r in self.script[: len(prompts)]
        ]


def _cfg(temperature=0.7, top_k=0):
    return SimpleNamespace(temperature=temperature, top_k=top_k)


@pytest.fixture
def policy():
    torch.manual_seed(0)
    cfg = tiny_mistral_config(
        vocab_size=20, hidden_size=16, intermediate_size=32, num_hidden_layers=1, head_dim=8
    )
    return MistralForCausalLM(cfg)


def test_sampling_parameters_map_our_knobs():
    kw = sampling_kwargs(limit=48, temperature=0.7, top_k=0, eos_id=EOS, seed=5)
    assert kw["max_tokens"] == 48 and kw["temperature"] == 0.7 and kw["top_p"] == 1.0
    assert kw["top_k"] == -1  # ours: 0 = full distribution; vLLM: -1 (or 0)
    assert kw["stop_token_ids"] == [EOS] and kw["n"] == 1 and kw["seed"] == 5
    assert sampling_kwargs(8, 1.0, 40, EOS, 0)["top_k"] == 40


@pytest.mark.parametrize("v1", [False, True])
def test_weights_are_synced_from_the_policy_every_iteration(policy, v1):
    llm = FakeLLM([([5, EOS], "stop")] * 2, v1=v1)
    eng = VLLMEngine(llm, FakeParams, _cfg())
    ids, mask = torch.tensor([[BOS, 7], [PAD, BOS]]), torch.tensor([[1, 1], [0, 1]])
    eng.generate(policy, ids, mask, 8, EOS, PAD)
    with torch.no_grad():
        policy.model.embed_tokens.weight.add_(1.0)  # "an optimizer step"
    eng.generate(policy, ids, mask, 8, EOS, PAD)
    assert len(llm.model.loads) == 2 and eng.synced == 2
    sd = policy.state_dict()
    assert llm.model.loads[0].keys() == sd.keys()  # every tensor, by its HF name
    for k, v in sd.items():
        assert torch.equal(llm.model.loads[1][k], v)  # the weights after the step
    name = "model.embed_tokens.weight"
    assert torch.equal(llm.model.loads[1][name], llm.model.loads[0][name] + 1.0)


def test_rpc_path_when_the_engine_runs_in_worker_processes(policy):
    calls = []

    class RpcLLM(FakeLLM):
        def __init__(self, script):
            super().__init__(script)
            del self.llm_engine  # no in-process model to reach

        def collective_rpc(self, fn, args=()):
            worker = SimpleNamespace(model_runner=SimpleNamespace(model=self.model))
            calls.append(fn)
            fn(worker, *args)

    llm = RpcLLM([([EOS], "stop")])
    VLLMEngine(llm, FakeParams, _cfg()).sync_weights(policy)
    assert len(calls) == 1 and llm.model.loads[0].keys() == policy.state_dict().keys()


def test_outputs_become_a_rollout_with_the_limit_and_eos(policy):
    script = [
        ([5, 6, EOS], "stop"),  # EOS returned
        ([5, 6, 7, 8], "length"),  # cut at the limit: truncated
        ([9], "stop"),  # stopped on EOS that vLLM did not return (special token)
    ]
    llm = FakeLLM(script)
    torch.manual_seed(3)
    ids = torch.tensor([[BOS, 7, 8], [PAD, BOS, 7], [PAD, PAD, BOS]])
    mask = (ids != PAD).long()
    ro = VLLMEngine(llm, FakeParams, _cfg(0.9, 5)).generate(policy, ids, mask, 4, EOS, PAD)
    prompts, params = llm.calls[0]
    assert [p["prompt_token_ids"] for p in prompts] == [[BOS, 7, 8], [BOS, 7], [BOS]]
    assert all(p.kw["max_tokens"] == 4 and p.kw["temperature"] == 0.9 for p in params)
    assert all(p.kw["top_k"] == 5 for p in params)
    seeds = [p.kw["seed"] for p in params]
    assert len(set(seeds)) == 3  # rows sampled independently, reproducibly from torch's RNG
    assert ro.response_ids.tolist() == [[5, 6, EOS, PAD], [5, 6, 7, 8], [9, EOS, PAD, PAD]]
    assert ro.response_mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]]
    assert ro.truncated.tolist() == [False, True, False] and ro.limit == 4
    assert ro.logprobs is None  # PPO recomputes old log-probs with the trained policy
    assert torch.equal(ro.prompt_ids, ids)


def test_rows_end_at_the_turn_marker_as_with_the_hf_engine(policy):
    """vLLM samples on past a stop sequence (it stops at EOS only); the engine keeps what
    `rollout.generate` keeps (tests/e2e/test_real_path.py::
    test_rollouts_and_answers_stop_at_the_turn_marker): the row up to and including the
    marker, not truncated."""
    marker = [11, 12]  # e.g. "\n\nHuman:" after text
    script = [
        ([5, 11, 12, 9, 9, EOS], "stop"),  # marker, then the user's next turn: cut after it
        ([5, 11, 6, 7, 8, 9], "length"),  # half a marker: no stop, truncated at the limit
        ([11, 12], "length"),  # the marker ends what vLLM returned: stopped, not truncated
    ]
    eng = VLLMEngine(FakeLLM(script), FakeParams, _cfg())
    eng.stop = [marker]
    ids = torch.tensor([[BOS, 7], [PAD, BOS], [PAD, BOS]])
    mask = (ids != PAD).long()
    ro = eng.generate(policy, ids, mask, 6, EOS, PAD)
    assert ro.response_ids.tolist() == [
        [5, 11, 12, PAD, PAD, PAD],
        [5, 11, 6, 7, 8, 9],
        [11, 12, PAD, PAD, PAD, PAD],
    ]
    assert ro.response_mask.sum(1).tolist() == [3, 6, 2]
    assert ro.truncated.tolist() == [False, True, False]
    assert engines.first_stop([5, 11, 12, 9], [[EOS], marker]) == 3
    assert engines.first_stop([5, 11, 6], [[EOS], marker]) is None


def test_vllm_missing_is_a_named_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(
        RolloutEngineUnavailableError, match=r"coarse\.rollout\.engine=vllm.*\[vllm\]"
    ):
        engines.check_engine("vllm")
    engines.check_engine("hf")  # the default needs nothing


def test_vllm_without_a_gpu_is_a_named_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RolloutEngineUnavailableError, match=r"CUDA GPU.*engine=hf"):
        engines.check_engine("vllm")
    assert issubclass(RolloutEngineUnavailableError, C2FError)


def test_preflight_refuses_vllm_here_and_validation_names_a_bad_engine(monkeypatch):
    from omegaconf.errors import ValidationError

    from c2f_exp.cli_errors import one_line
    from c2f_exp.coarse.stage import CoarseStage
    from tests.helpers import check
    from tests.helpers.coarse import coarse_cfg, coarse_conf

    monkeypatch.setitem(sys.modules, "vllm", None)
    over = {"coarse": {"rollout": {"engine": "vllm"}, "reward_model": None}}
    cfg = coarse_conf({**over, "stages": ["prepare", "reward", "coarse"]})
    with pytest.raises(RolloutEngineUnavailableError, match="vllm"):
        CoarseStage().preflight(cfg)
    # a choice field: refused when the value is set (composition), naming the full key
    with pytest.raises(ValidationError) as e:
        check(coarse_cfg({"coarse": {"rollout": {"engine": "sglang"}}}))
    assert "coarse.rollout.engine must be one of hf, vllm" in one_line(e.value)


def test_engine_choice_is_not_in_the_cache_key_unless_it_changes_sampling():
    from c2f_exp.coarse.stage import CoarseStage
    from tests.helpers.coarse import coarse_conf

    sub = CoarseStage().config_subtree
    base = sub(coarse_conf())
    assert sub(coarse_conf({"coarse": {"rollout": {"lean_decode": False}}})) == base
    assert sub(coarse_conf({"coarse": {"rollout": {"engine": "vllm"}}})) != base
