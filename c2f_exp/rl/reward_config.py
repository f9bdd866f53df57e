"""Typed schema of the `reward` config group (`conf/reward/*.yaml`) and its validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from c2f_exp.errors import ConfigError, bad_value, check_choice, check_positive

SOURCES = ("tinyworld", "hub")
FORMATS = ("plain", "chat")
INITS = ("base", "instruct")


@dataclass
class RewardTrainConf:
    """Bradley-Terry training with TRL's RewardTrainer."""

    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs
    lr: float = 1e-3
    batch_size: int = 16  # pairs per device step
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_length: int = 512  # pairs with a longer side are dropped (TRL's filter)
    margin_scale: float = 0.0  # BT margin = scale x gold gap where known (Llama 2 eq. 2); 0: none
    center_rewards_coefficient: float | None = 0.01  # keeps scores near 0 (Eisenstein 2023)
    bf16: bool = False
    gradient_checkpointing: bool = False


@dataclass
class GoldEvalConf:
    """Agreement with the tiny world's gold scorer on freshly sampled answers."""

    enabled: bool = True
    samples_per_prompt: int = 6  # answers sampled per held-out prompt; all pairs compared
    max_prompts: int | None = None  # null: every held-out entity
    max_new_tokens: int = 96


@dataclass
class OnPolicyConf:
    """Extra training pairs: answers sampled from the init policy for the training prompts,
    ordered by the gold scorer (the tiny world's labeller) -- InstructGPT's recipe of labelling
    the model's own samples, so the reward model sees the text PPO will show it."""

    enabled: bool = False
    samples_per_prompt: int = 6
    max_new_tokens: int = 96
    min_margin: float = 0.25  # smallest gold difference made a pair


@dataclass
class RewardConf:
    name: str = MISSING
    source: str = "tinyworld"  # tinyworld: data/preferences_*.jsonl of prepare | hub: dataset
    path: str | None = None  # an existing reward model (dir or hub id): no training
    init: str = "base"  # the model the reward model starts from (base | instruct)
    format: str = "plain"  # plain: "<s> prompt answer</s>" | chat: the chat template
    dataset: str | None = None  # hub preference data set (source=hub)
    train_split: str = "train"
    test_split: str = "test"
    max_train_pairs: int | None = None  # null: all
    max_test_pairs: int | None = 1000
    eval_batch_size: int = 32
    train: RewardTrainConf = field(default_factory=RewardTrainConf)
    gold: GoldEvalConf = field(default_factory=GoldEvalConf)
    onpolicy: OnPolicyConf = field(default_factory=OnPolicyConf)


def validate_reward(cfg: Any) -> None:
    """Check the `reward` group against the rest of the root config `cfg` (no I/O)."""
    r = cfg.get("reward")
    if r is None:
        raise ConfigError("reward is missing; add `- reward: tinyworld` to the defaults list")
    check_choice("reward.source", r.source, SOURCES)
    check_choice("reward.format", r.format, FORMATS)
    check_choice("reward.init", r.init, INITS)
    for k in ("epochs", "lr", "batch_size", "grad_accum", "max_length"):
        check_positive(f"reward.train.{k}", r.train[k])
    check_positive("reward.eval_batch_size", r.eval_batch_size)
    for k in ("max_train_pairs", "max_test_pairs"):
        if r[k] is not None:
            check_positive(f"reward.{k}", r[k])
    if not 0 <= r.train.warmup_ratio < 1:
        raise bad_value("reward.train.warmup_ratio", r.train.warmup_ratio, "within [0, 1)")
    if r.source == "hub" and not r.path and not r.dataset:
        raise bad_value(
            "reward.dataset",
            r.dataset,
            "a hub preference data set id or local path for reward.source=hub",
            "e.g. reward.dataset=Anthropic/hh-rlhf",
        )
    if r.source == "tinyworld" and cfg.model.source != "tinyworld" and not r.path:
        raise bad_value(
            "reward.source",
            r.source,
            "hub when model.source=hub",
            "the tiny world's preferences only fit the tiny models: use reward=hh_rlhf",
        )
    for part in ("gold", "onpolicy"):
        sub = r[part]
        if not sub.enabled:
            continue
        if r.source != "tinyworld":
            raise bad_value(
                f"reward.{part}.enabled",
                True,
                "false for reward.source=hub",
                "only the tiny world has a gold scorer",
            )
        check_positive(f"reward.{part}.max_new_tokens", sub.max_new_tokens)
        if sub.samples_per_prompt < 2:
            raise bad_value(
                f"reward.{part}.samples_per_prompt",
                sub.samples_per_prompt,
                ">= 2 (answers are compared in pairs)",
            )
