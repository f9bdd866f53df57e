"""Typed schemas of the `coarse` and `distributed` config groups, and their validation.

`CoarseConf` holds the PPO settings of the Coarse Actor (the rollout length limit is the
`length_schedule` group's); `DistributedConf` says how the run scales out (accelerate +
DeepSpeed ZeRO). The defaults here are the only ones (conf/coarse/tinyworld.yaml and
conf/distributed/none.yaml only name the option); they are ours (the paper gives none), sized
for the tiny world in <= 5 min on 2 CPU cores. `conf/coarse/mistral_7b.yaml` holds what the 7B
run changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from c2f_exp.core.choices import DType, choice
from c2f_exp.core.errors import bad_value, check_seed

CriticInit = choice("CriticInit", ("reward", "base"), __name__)
KLController = choice("KLController", ("fixed", "adaptive"), __name__)
KLEstimator = choice("KLEstimator", ("k1", "k2", "k3"), __name__)
PromptSplit = choice("PromptSplit", ("train", "all"), __name__)
GoldSource = choice("GoldSource", ("tinyworld_gold", "reward_model"), __name__)
RolloutEngine = choice("RolloutEngine", ("hf", "vllm"), __name__)
Backend = choice("Backend", ("none", "ddp", "deepspeed"), __name__)


def _positive(key: str, v: Any, integer: bool = False) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    if not ok or (integer and not isinstance(v, int)):
        raise bad_value(key, v, "a positive integer" if integer else "a finite number > 0")


INTS = ("steps", "batch_size", "minibatch_size", "ppo_epochs", "checkpoint_every")
INTS += ("keep_checkpoints", "forward_batch_size", "kl_horizon")
FLOATS = ("lr", "critic_lr", "adam_eps", "max_grad_norm", "temperature", "cliprange")
FLOATS += ("cliprange_value", "vf_coef", "gamma")


@dataclass
class RolloutConf:
    """The generation engine of the rollouts (c2f_exp/coarse/engines.py)."""

    # hf (ours: CPU or GPU) | vllm (CUDA GPUs; pip install -e ".[vllm]"; untested on a GPU so
    # far, docs/gpus.md)
    engine: RolloutEngine = RolloutEngine.hf
    lean_decode: bool = True  # hf: Llama-family decode without per-token forward() overhead
    reuse_logprobs: bool = True  # hf: PPO's old log-probs from sampling, not a second forward
    # with reuse_logprobs: epoch 0's first minibatch reuses the forward that gives its old
    # values (coarse/update.py)
    reuse_first_forward: bool = True
    gpu_memory_utilization: float = 0.3  # vllm: share of the GPU its KV cache may take
    max_model_len: int | None = None  # vllm: null = the model's
    enforce_eager: bool = True  # vllm: no CUDA graphs (weights change every iteration)

    def __post_init__(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            want = "within (0, 1]"
            raise bad_value("gpu_memory_utilization", self.gpu_memory_utilization, want)
        if self.max_model_len is not None:
            _positive("max_model_len", self.max_model_len, integer=True)


@dataclass
class CoarseConf:
    name: str = MISSING
    reward_model: str | None = None  # HF seq-cls dir; null: the reward stage's `model/`
    # reward | base (fresh zero head on the base model)
    critic_init: CriticInit = CriticInit.reward
    steps: int = 100  # PPO iterations (at most, with token_budget); tiny world: ~155 s on 2 cores
    token_budget: int | None = None  # stop once this many tokens were generated (equal compute)
    seed: int | None = None  # the RL run's seed (sampling, prompt order); null: the run's `seed`.
    # Seeds of PPO alone, over one world, base and reward model: sweeps/schedule_ablation.yaml
    batch_size: int = 32  # prompts (= rollouts) per iteration, over all processes
    minibatch_size: int = 16  # per optimizer step, over all processes
    ppo_epochs: int = 2  # updates cost ~3x the rollout on CPU: more rollouts, fewer epochs
    lr: float = 2.0e-4  # policy; tiny world: 1e-4 too slow for 5 min, 5e-4 blew the KL up
    critic_lr: float = 2.0e-4
    adam_eps: float = 1.0e-8
    max_grad_norm: float = 1.0
    # sampling; the same temperature scales training logits. 0.7: closer to the greedy answers
    # we are judged on (T=1: greedy decoding of the trained policy fell into repetition loops)
    temperature: float = 0.7
    top_k: int = 0  # 0: sample from the full distribution
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    kl_controller: KLController = KLController.fixed  # fixed | adaptive (Ziegler et al. 2019)
    # beta (initial beta for adaptive); tiny world: 0.05 only taught the actor to stop, 0.01
    # was no better (docs/results.md)
    kl_coef: float = 0.02
    kl_target: float | None = None  # adaptive only
    kl_horizon: int = 10000  # adaptive only
    kl_estimator: KLEstimator = KLEstimator.k1  # k1 | k2 | k3, per token in the shaped reward
    whiten_advantages: bool = True
    # subtracted from truncated responses' score (e.g. 1.0: they lose 1 reward point)
    missing_eos_penalty: float | None = None
    # DAPO soft overlong punishment window (e.g. 16: in the last 16 tokens of the limit)
    overlong_cache: int | None = None
    max_bad_batches: int = 3  # NaN/inf-reward batches skipped before stopping
    checkpoint_every: int = 10  # iterations between checkpoints (in the stage's work dir)
    # samples.jsonl: `samples_per_step` rollouts (prompt, response, reward, limit) every
    # `samples_every` iterations, to read what the Coarse Actor writes; 0 = none
    samples_every: int = 10
    samples_per_step: int = 4
    keep_checkpoints: int = 2
    # tiny world: train on the train entities' prompts (the gold check uses held-out ones);
    # all: every prompt
    prompt_split: PromptSplit = PromptSplit.train
    # text before each prompt; {bos} = the tokenizer's BOS token. The tiny base was pretrained
    # on "<s> tell me about the X . ..."
    prompt_prefix: str = "{bos} "
    forward_batch_size: int = 64  # rows per no-grad forward (reference, old logprobs, reward)
    eval_prompts: int = 30  # tiny world: held-out entities for the gold-scorer check (0: off)
    eval_max_new_tokens: int | None = None  # null: length_schedule.l_max
    dtype: DType = DType.float32  # policy, critic, reference and reward model weights
    gradient_checkpointing: bool = False
    # Overoptimization monitor (coarse/gold_rewards.py, coarse/gold_monitor.py; Gao et al.
    # 2022): every gold_every iterations (and the last) the batch's rollouts are also scored by
    # a gold reward; overoptimization.csv/.png in the artifact.
    # 0: off; the tiny world's gold scorer is pure Python (~ms per batch)
    gold_every: int = 5
    # tinyworld_gold | reward_model (then set gold_reward_model)
    gold_source: GoldSource = GoldSource.tinyworld_gold
    # reward_model source: the held-out (e.g. larger) "gold" reward model (dir or hub id)
    gold_reward_model: str | None = None
    # stop once gold's moving average fell more than gold_min_drop below its best while the
    # RM's moving average rose (gold_monitor.overoptimized)
    early_stop_on_gold: bool = False
    gold_window: int = 3  # monitor points per moving average in the stop rule
    # gold total per answer (batch means move ~0.3-0.5 step to step)
    gold_min_drop: float = 1.0
    rollout: RolloutConf = field(default_factory=RolloutConf)  # generation engine (engines.py)

    def __post_init__(self) -> None:
        for k in INTS:
            _positive(k, getattr(self, k), integer=True)
        for k in FLOATS:
            _positive(k, getattr(self, k))
        if self.batch_size % self.minibatch_size:
            want = f"a divisor of batch_size ({self.batch_size})"
            raise bad_value("minibatch_size", self.minibatch_size, want)
        if not 0 <= self.lam <= 1 or self.gamma > 1:
            raise bad_value("lam", self.lam, "within [0, 1] (and gamma <= 1)")
        kl = self.kl_coef
        if not (isinstance(kl, (int, float)) and math.isfinite(kl) and kl >= 0):
            raise bad_value("kl_coef", kl, "a finite number >= 0")
        if self.kl_controller == KLController.adaptive:
            if self.kl_target is None:
                raise bad_value("kl_target", None, "a KL target > 0 for kl_controller=adaptive")
            _positive("kl_target", self.kl_target)
        check_seed("seed", self.seed)
        self._check_optional()
        self._check_gold()

    def _check_optional(self) -> None:
        for k in ("missing_eos_penalty", "overlong_cache", "eval_max_new_tokens", "token_budget"):
            v = getattr(self, k)
            if v is not None and (isinstance(v, bool) or not v >= 0):
                raise bad_value(k, v, "null or a number >= 0")
        for k in ("top_k", "max_bad_batches", "eval_prompts"):
            if getattr(self, k) < 0:
                raise bad_value(k, getattr(self, k), "a number >= 0")
        try:
            self.prompt_prefix.format(bos="")
        except (KeyError, IndexError, ValueError):
            want = "text whose only placeholder is {bos}"
            raise bad_value("prompt_prefix", self.prompt_prefix, want) from None

    def _check_gold(self) -> None:
        """The overoptimization monitor's keys (whether its source can run here: preflight)."""
        if isinstance(self.gold_every, bool) or self.gold_every < 0:
            raise bad_value("gold_every", self.gold_every, "an integer >= 0 (0: monitor off)")
        _positive("gold_window", self.gold_window, integer=True)
        if not (math.isfinite(self.gold_min_drop) and self.gold_min_drop >= 0):
            raise bad_value("gold_min_drop", self.gold_min_drop, "a finite number >= 0")


@dataclass
class DistributedConf:
    """How the run scales out. The default (distributed=none): one process, or whatever
    `accelerate launch` without DeepSpeed starts (plain DDP)."""

    name: str = MISSING
    backend: Backend = Backend.none  # none | ddp | deepspeed
    zero_stage: int | None = None  # deepspeed: 0-3
    deepspeed_config: str | None = None  # json; relative paths: from conf/distributed/
    num_processes: int = 1  # ranks for `accelerate launch`; GPU nodes: one per visible GPU
    cpu: bool = False  # no GPU: start num_processes CPU ranks (gloo) instead of stopping

    def __post_init__(self) -> None:
        _positive("num_processes", self.num_processes, integer=True)
        if self.backend == Backend.deepspeed and self.zero_stage not in (0, 1, 2, 3):
            raise bad_value("zero_stage", self.zero_stage, "0, 1, 2 or 3 for deepspeed")
