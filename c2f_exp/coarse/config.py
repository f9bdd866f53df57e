"""Typed schemas of the `coarse` and `distributed` config groups, and their validation.

`CoarseConf` holds the PPO settings of the Coarse Actor (the rollout length limit is the
`length_schedule` group's); `DistributedConf` says how the run scales out (accelerate +
DeepSpeed ZeRO). Defaults are ours, tuned for the tiny world; `conf/coarse/mistral_7b.yaml`
carries the 7B settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from c2f_exp.coarse.schedule_config import max_limit
from c2f_exp.core.choices import DTYPES
from c2f_exp.core.errors import bad_value, check_choice
from c2f_exp.sources import source_for

CRITIC_INITS = ("reward", "base")
KL_CONTROLLERS = ("fixed", "adaptive")
KL_ESTIMATORS = ("k1", "k2", "k3")
PROMPT_SPLITS = ("train", "all")
BACKENDS = ("none", "ddp", "deepspeed")


@dataclass
class RolloutConf:
    engine: str = "hf"  # hf (ours, any device) | vllm (CUDA GPUs, pip install -e ".[vllm]")
    lean_decode: bool = True  # hf: Llama-family decode without per-token forward() overhead
    reuse_logprobs: bool = True  # hf: PPO's old log-probs from sampling, not a second forward
    reuse_first_forward: bool = True  # the update's first minibatch reuses the old-value forward
    gpu_memory_utilization: float = 0.3  # vllm: share of the GPU its KV cache may take
    max_model_len: int | None = None  # vllm: null = the model's
    enforce_eager: bool = True  # vllm: no CUDA graphs (weights change every iteration)


@dataclass
class CoarseConf:
    name: str = MISSING
    reward_model: str | None = None  # HF seq-cls dir; null: the reward stage's `model/`
    critic_init: str = "reward"  # reward | base (fresh zero head on the base model)
    steps: int = 100  # PPO iterations (at most, with token_budget)
    token_budget: int | None = None  # stop once this many tokens were generated (equal compute)
    seed: int | None = None  # the RL run's seed (sampling, prompt order); null: the run's `seed`.
    # Seeds of PPO alone, over one world, base and reward model: sweeps/schedule_ablation.yaml
    batch_size: int = 32  # prompts (= rollouts) per iteration, over all processes
    minibatch_size: int = 16  # per optimizer step, over all processes
    ppo_epochs: int = 2  # updates cost ~3x the rollout on CPU: more rollouts, fewer epochs
    lr: float = 2.0e-4  # policy (tiny models; 5e-4 made the KL blow up)
    critic_lr: float = 2.0e-4
    adam_eps: float = 1.0e-8
    max_grad_norm: float = 1.0
    temperature: float = 0.7  # sampling; the same temperature scales training logits
    top_k: int = 0  # 0: sample from the full distribution
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    kl_controller: str = "fixed"  # fixed | adaptive (Ziegler et al. 2019)
    kl_coef: float = 0.02  # beta (initial beta for adaptive)
    kl_target: float | None = None  # adaptive only
    kl_horizon: int = 10000  # adaptive only
    kl_estimator: str = "k1"  # k1 | k2 | k3, per token in the shaped reward
    whiten_advantages: bool = True
    missing_eos_penalty: float | None = None  # subtracted from truncated responses' score
    overlong_cache: int | None = None  # DAPO soft overlong punishment window (tokens)
    max_bad_batches: int = 3  # NaN/inf-reward batches skipped before stopping
    checkpoint_every: int = 10  # iterations between checkpoints (in the stage's work dir)
    # samples.jsonl: `samples_per_step` rollouts (prompt, response, reward, limit) every
    # `samples_every` iterations, to read what the Coarse Actor writes; 0 = none
    samples_every: int = 10
    samples_per_step: int = 4
    keep_checkpoints: int = 2
    prompt_split: str = "train"  # tiny world: train on train entities' prompts (or all)
    prompt_prefix: str = "{bos} "  # text before each prompt; {bos} = tokenizer's BOS token
    forward_batch_size: int = 64  # rows per no-grad forward (reference, old logprobs, reward)
    eval_prompts: int = 30  # tiny world: held-out entities for the gold-scorer check (0: off)
    eval_max_new_tokens: int | None = None  # null: length_schedule.l_max
    dtype: str = "float32"  # policy, critic, reference and reward model weights
    gradient_checkpointing: bool = False
    # overoptimization monitor (coarse/gold_rewards.py, coarse/gold_monitor.py; Gao et al. 2022)
    gold_every: int = 5  # score every n-th batch (and the last) with a gold reward too; 0: off
    gold_source: str = "tinyworld_gold"  # tinyworld_gold | reward_model (gold_reward_model)
    gold_reward_model: str | None = None  # the held-out "gold" reward model (dir or hub id)
    early_stop_on_gold: bool = False  # stop when smoothed gold falls while smoothed RM rises
    gold_window: int = 3  # monitor points per moving average in the stop rule
    gold_min_drop: float = 1.0  # how far gold's moving average must fall below its best
    rollout: RolloutConf = field(default_factory=RolloutConf)  # generation engine (engines.py)


@dataclass
class DistributedConf:
    name: str = MISSING
    backend: str = "none"  # none | ddp | deepspeed
    zero_stage: int | None = None  # deepspeed: 0-3
    deepspeed_config: str | None = None  # json; relative paths: from conf/distributed/
    num_processes: int = 1  # ranks for `accelerate launch`; GPU nodes: one per visible GPU
    cpu: bool = False  # no GPU: start num_processes CPU ranks (gloo) instead of stopping


def _positive(key: str, v: Any, integer: bool = False) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    if not ok or (integer and not isinstance(v, int)):
        raise bad_value(key, v, "a positive integer" if integer else "a finite number > 0")


INTS = ("steps", "batch_size", "minibatch_size", "ppo_epochs", "checkpoint_every")
INTS += ("keep_checkpoints", "forward_batch_size", "kl_horizon")
FLOATS = ("lr", "critic_lr", "adam_eps", "max_grad_norm", "temperature", "cliprange")
FLOATS += ("cliprange_value", "vf_coef", "gamma")
CHOICES = {"critic_init": CRITIC_INITS, "kl_controller": KL_CONTROLLERS, "dtype": DTYPES}
CHOICES.update(kl_estimator=KL_ESTIMATORS, prompt_split=PROMPT_SPLITS)


def validate_coarse(cfg: Any) -> None:
    """Check the `coarse` node (and its `length_schedule`); raise ConfigError naming the key."""
    from c2f_exp.coarse.schedule_config import validate_schedule

    c = cfg.coarse
    for k in INTS:
        _positive(f"coarse.{k}", c[k], integer=True)
    for k in FLOATS:
        _positive(f"coarse.{k}", c[k])
    for k, choices in CHOICES.items():
        check_choice(f"coarse.{k}", c[k], choices)
    if c.batch_size % c.minibatch_size:
        want = f"a divisor of coarse.batch_size ({c.batch_size})"
        raise bad_value("coarse.minibatch_size", c.minibatch_size, want)
    if not 0 <= c.lam <= 1 or c.gamma > 1:
        raise bad_value("coarse.lam", c.lam, "within [0, 1] (and gamma <= 1)")
    if not (isinstance(c.kl_coef, (int, float)) and math.isfinite(c.kl_coef) and c.kl_coef >= 0):
        raise bad_value("coarse.kl_coef", c.kl_coef, "a finite number >= 0")
    if c.kl_controller == "adaptive":
        if c.kl_target is None:
            raise bad_value("coarse.kl_target", None, "a KL target > 0 for kl_controller=adaptive")
        _positive("coarse.kl_target", c.kl_target)
    _check_optional(c)
    _check_rollout(c.rollout)
    _check_gold(cfg)
    validate_schedule(cfg.get("length_schedule"))
    _check_lengths(cfg)
    validate_distributed(cfg.get("distributed"))


def _check_optional(c: Any) -> None:
    for k in ("missing_eos_penalty", "overlong_cache", "eval_max_new_tokens", "token_budget"):
        if c[k] is not None and (isinstance(c[k], bool) or not c[k] >= 0):
            raise bad_value(f"coarse.{k}", c[k], "null or a number >= 0")
    for k in ("top_k", "max_bad_batches", "eval_prompts"):
        if c[k] < 0:
            raise bad_value(f"coarse.{k}", c[k], "a number >= 0")
    try:
        c.prompt_prefix.format(bos="")
    except (KeyError, IndexError, ValueError):
        want = "text whose only placeholder is {bos}"
        raise bad_value("coarse.prompt_prefix", c.prompt_prefix, want) from None


def _check_rollout(r: Any) -> None:
    from c2f_exp.coarse.engines import ENGINES

    check_choice("coarse.rollout.engine", r.engine, ENGINES)
    if not 0 < r.gpu_memory_utilization <= 1:
        want = "within (0, 1]"
        raise bad_value("coarse.rollout.gpu_memory_utilization", r.gpu_memory_utilization, want)
    if r.max_model_len is not None:
        _positive("coarse.rollout.max_model_len", r.max_model_len, integer=True)


def _check_gold(cfg: Any) -> None:
    """The overoptimization monitor's keys, and whether its gold source can run here."""
    from c2f_exp.coarse.gold_rewards import SOURCES, check_gold_source

    c = cfg.coarse
    if isinstance(c.gold_every, bool) or c.gold_every < 0:
        raise bad_value("coarse.gold_every", c.gold_every, "an integer >= 0 (0: monitor off)")
    check_choice("coarse.gold_source", c.gold_source, tuple(SOURCES))
    _positive("coarse.gold_window", c.gold_window, integer=True)
    if not (math.isfinite(c.gold_min_drop) and c.gold_min_drop >= 0):
        raise bad_value("coarse.gold_min_drop", c.gold_min_drop, "a finite number >= 0")
    check_gold_source(cfg)


def _check_lengths(cfg: Any) -> None:
    """The longest rollout must fit the tiny model's positions (hub models: their problem)."""
    top = max_limit(cfg.length_schedule)
    if source_for(cfg, "model.source").builds_models:  # its positions: model.arch
        room = cfg.model.arch.max_position_embeddings - 16  # prompts are ~8 tokens
        if top > room:
            raise bad_value(
                "length_schedule.l_max",
                top,
                f"<= {room} for model.arch.max_position_embeddings={room + 16}",
                "lower the limit or raise max_position_embeddings",
            )


def validate_distributed(d: Any) -> None:
    if d is None:
        return
    check_choice("distributed.backend", d.backend, BACKENDS)
    _positive("distributed.num_processes", d.num_processes, integer=True)
    if d.backend == "deepspeed" and d.zero_stage not in (0, 1, 2, 3):
        raise bad_value("distributed.zero_stage", d.zero_stage, "0, 1, 2 or 3 for deepspeed")
