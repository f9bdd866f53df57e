"""Rollout engines: `coarse.rollout.engine` = hf (ours, any device) | vllm (CUDA GPUs).

`hf` samples with `rollout.generate` (the lean Llama-family decoder where it applies). `vllm`
generates with a vLLM `LLM` colocated with the trainer, the way OpenRLHF and veRL use it: the
engine is built once from the base model, the trained policy's weights are pushed into it before
every iteration's rollout (`load_weights` on vLLM's model, in-process), the length limit in
force is `SamplingParams.max_tokens`, and temperature / top_k map one to one. vLLM's log-probs
are not reused (they come from vLLM's kernels, not the trained model), so PPO recomputes the old
log-probs with the policy. The vllm engine is untested on a GPU here (README, GPU section).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import torch

from c2f_exp.coarse.config import RolloutEngine
from c2f_exp.coarse.rollout import Rollout, generate
from c2f_exp.core.errors import C2FError

if TYPE_CHECKING:
    from c2f_exp.coarse.config import CoarseConf

log = logging.getLogger(__name__)
ENGINES = RolloutEngine.values()  # ("hf", "vllm")


class RolloutEngineUnavailableError(C2FError):
    """The configured rollout engine cannot run on this machine."""


def check_engine(engine: str) -> None:
    """Preflight: raise RolloutEngineUnavailableError unless `engine` can run here."""
    if engine != "vllm":
        return
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise RolloutEngineUnavailableError(
            "coarse.rollout.engine=vllm needs the vllm extra: pip install -e '.[vllm]' "
            "(or set coarse.rollout.engine=hf)"
        ) from None
    if not torch.cuda.is_available():
        raise RolloutEngineUnavailableError(
            "coarse.rollout.engine=vllm needs a CUDA GPU and none is visible; "
            "set coarse.rollout.engine=hf"
        )


class HFEngine:
    """Our own sampler (`rollout.generate`) on the policy module itself."""

    def __init__(self, c: CoarseConf):
        self.c, r = c, c.rollout
        self.lean, self.reuse_logprobs = r.lean_decode, r.reuse_logprobs
        self.stop: list[list[int]] = []  # token sequences that end a row (the turn marker)

    def generate(self, policy, ids, mask, limit: int, eos_id: int, pad_id: int) -> Rollout:
        c = self.c
        return generate(
            policy,
            *(ids, mask, limit, eos_id, pad_id, c.temperature, c.top_k),
            lean=self.lean,
            logprobs=self.reuse_logprobs,
            stop=self.stop,
        )


def sampling_kwargs(limit: int, temperature: float, top_k: int, eos_id: int, seed: int) -> dict:
    """vLLM `SamplingParams` keyword arguments for one row (our knobs -> vLLM's)."""
    return {
        "n": 1,
        "temperature": float(temperature),
        "top_k": int(top_k) if top_k > 0 else -1,  # vLLM: -1 = the full distribution
        "top_p": 1.0,
        "max_tokens": int(limit),  # the length limit l(t) in force
        "stop_token_ids": [int(eos_id)],
        "seed": int(seed),  # per row, drawn from torch's RNG: runs stay reproducible
        "detokenize": False,  # the reward function decodes with the policy's tokenizer
    }


def first_stop(toks: list[int], stops: list[list[int]]) -> int | None:
    """The length of `toks` up to and including the earliest stop sequence, else None (what
    `rollout.generate` keeps of a row: the marker stays in it)."""
    for t in range(len(toks)):
        if any(s and toks[max(0, t + 1 - len(s)) : t + 1] == s for s in stops):
            return t + 1
    return None


def vllm_model(llm: Any) -> Any | None:
    """The torch model inside an in-process vLLM `LLM` (V0 and V1 layouts), else None."""
    try:
        worker = llm.llm_engine.model_executor.driver_worker
    except AttributeError:
        return None
    worker = getattr(worker, "worker", worker)  # V1 wraps the GPU worker
    return getattr(getattr(worker, "model_runner", None), "model", None)


def _load_weights_rpc(worker: Any, weights: list) -> None:
    """Runs inside each vLLM worker (`LLM.collective_rpc`): load HF-named weights."""
    worker.model_runner.model.load_weights(weights=weights)


class VLLMEngine:
    """Generation in a colocated vLLM `LLM`; weights synced from the policy every iteration.

    Args:
        llm: a `vllm.LLM` (or a stand-in with the same `generate` / model layout).
        sampling_cls: `vllm.SamplingParams` (or a stand-in).
        c: the `coarse` config (temperature, top_k).
    """

    def __init__(self, llm: Any, sampling_cls: Any, c: Any):
        self.llm, self.sampling_cls, self.c = llm, sampling_cls, c
        self.synced = 0
        # token sequences that end a row (the turn marker), as for HFEngine: vLLM stops only at
        # EOS (its `stop` strings need detokenizing), so a row is cut after the first one here
        self.stop: list[list[int]] = []

    def sync_weights(self, policy: torch.nn.Module) -> int:
        """Push the policy's weights (HF names; vLLM fuses qkv / gate_up itself). Returns count."""
        weights = [(k, v.detach()) for k, v in policy.state_dict().items()]
        model = vllm_model(self.llm)
        if model is not None:  # in-process engine: no copy, no pickling
            model.load_weights(weights=weights)
        else:  # engine in worker processes (newer vLLM): the RPC path
            self.llm.collective_rpc(_load_weights_rpc, args=(weights,))
        self.synced += 1
        return len(weights)

    def generate(self, policy, ids, mask, limit: int, eos_id: int, pad_id: int) -> Rollout:
        """Sync weights, sample one response per left-padded prompt row, pack a `Rollout`."""
        self.sync_weights(policy)
        c, seed = self.c, int(torch.randint(0, 2**31 - 1 - ids.shape[0], ()))
        prompts = [
            {"prompt_token_ids": r[m.bool()].tolist()} for r, m in zip(ids, mask, strict=True)
        ]
        params = [
            self.sampling_cls(**sampling_kwargs(limit, c.temperature, c.top_k, eos_id, seed + i))
            for i in range(len(prompts))
        ]
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        rows, truncated = [], []
        for o in outs:
            toks = list(o.outputs[0].token_ids)[:limit]
            end = first_stop(toks, [[eos_id], *self.stop])
            stopped = end is not None
            toks = toks[:end] if stopped else toks
            if not stopped and o.outputs[0].finish_reason == "stop" and len(toks) < limit:
                toks.append(eos_id)  # stopped on EOS without returning it
                stopped = True
            rows.append(toks or [pad_id])
            truncated.append(not stopped)
        width = max(map(len, rows))
        resp = torch.full((len(rows), width), pad_id, dtype=torch.long)
        resp_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, toks in enumerate(rows):
            resp[i, : len(toks)], resp_mask[i, : len(toks)] = torch.tensor(toks), 1
        dev = ids.device
        trunc = torch.tensor(truncated, dtype=torch.bool, device=dev)
        return Rollout(ids, mask, resp.to(dev), resp_mask.to(dev), trunc, limit)


def build_engine(c: CoarseConf, policy_dir: str, seed: int) -> HFEngine | VLLMEngine:
    """The engine `coarse.rollout.engine` names (vllm: an `LLM` built from `policy_dir`)."""
    if c.rollout.engine == "hf":
        return HFEngine(c)
    check_engine("vllm")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process: load_weights
    import vllm

    r = c.rollout
    llm = vllm.LLM(
        model=policy_dir,
        dtype=str(c.dtype),  # vLLM's own dtype names (the choice enum's value)
        gpu_memory_utilization=r.gpu_memory_utilization,
        max_model_len=r.max_model_len,
        enforce_eager=r.enforce_eager,
        seed=seed,
    )
    log.info(
        "rollouts with vLLM %s (weights synced from the policy every iteration)", vllm.__version__
    )
    return VLLMEngine(llm, vllm.SamplingParams, c)
