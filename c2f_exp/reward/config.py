"""Typed schema of the `reward` config group (`conf/reward/*.yaml`) and its validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from c2f_exp.core.errors import (
    ConfigError,
    bad_value,
    check_choice,
    check_positive,
    check_save_steps,
)
from c2f_exp.sources import SOURCES as _SOURCES
from c2f_exp.sources import get_source

SOURCES = tuple(_SOURCES)  # tinyworld, hub (c2f_exp/sources.py)
FORMATS = ("plain", "chat")
INITS = ("base", "instruct")
OBJECTIVES = ("pairwise", "process")


@dataclass
class RewardTrainConf:
    """Bradley-Terry training with TRL's RewardTrainer."""

    epochs: float = 1.0  # tiny world: 3 or 6 epochs gained <= 3 points at 3-6x the time
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
    # a checkpoint every N optimizer steps (and at the end) in the stage's work dir; a killed
    # reward stage resumes training from it (trainer_resume.py). 0: none
    save_steps: int = 50


@dataclass
class GoldEvalConf:
    """Agreement with the tiny world's gold scorer on freshly sampled answers."""

    enabled: bool = True
    samples_per_prompt: int = 6  # answers sampled per held-out prompt; all pairs compared
    max_prompts: int | None = None  # null: every held-out entity
    max_new_tokens: int = 96
    defect_pairs_per_kind: int | None = 200  # pairs differing by one defect, each kind; null: all


@dataclass
class DefectConf:
    """Training pairs that isolate one defect each (wrong fact, repeat, missing explanation,
    off-topic fact), edited from the on-policy answers in equal shares (reward/defects.py)."""

    enabled: bool = False


@dataclass
class KnowledgeConf:
    """A learned head over the init LM's surprisal on top of the classifier (knowledge_reward.py):
    the classifier alone cannot tell a true fact from a false one; the LM can."""

    enabled: bool = True  # ours (conf/reward/tinyworld.yaml: wrong-fact agreement 0.49 -> 0.99)
    # ours: + sentence counts (all / distinct and free of contradictions): held-out agreement
    # 0.83 -> 0.85 on the default world, 0.86-0.87 -> 0.90-0.91 on another (tinyworld.yaml)
    sentences: bool = True


@dataclass
class RewardArchConf:
    """The reward model's own architecture (Mistral); null fields keep the init model's. Same
    width as the init model: its layers are copied and the extra ones start as the identity
    (zero output projections); another width starts from scratch (no pretrained knowledge)."""

    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    max_position_embeddings: int | None = None

    @staticmethod
    def overrides(a: Any) -> dict[str, int]:
        """The fields of `a` that are set."""
        return {k: v for k, v in dict(a).items() if v is not None} if a is not None else {}


@dataclass
class OnPolicyConf:
    """Extra training pairs: answers sampled from the init policy for the training prompts,
    ordered by the gold scorer (the tiny world's labeller) -- InstructGPT's recipe of labelling
    the model's own samples, so the reward model sees the text PPO will show it."""

    enabled: bool = True  # the largest lever in the tiny world (static pairs alone: 58%)
    samples_per_prompt: int = 10  # 6: 75% agreement, ~2x faster; 16: 84%, ~2.5x slower
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
    max_test_pairs: int | None = None  # null: all
    eval_batch_size: int = 64
    objective: str = "pairwise"  # pairwise: Bradley-Terry (TRL) | process: per-sentence, summed
    rounds: int = 1  # > 1: iterated labelling of best-of-2 answers under the current RM
    arch: RewardArchConf = field(default_factory=RewardArchConf)  # all null: the init model's
    defects: DefectConf = field(default_factory=DefectConf)
    knowledge: KnowledgeConf = field(default_factory=KnowledgeConf)
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
    check_save_steps("reward.train.save_steps", r.train.save_steps)
    for k in ("max_train_pairs", "max_test_pairs"):
        if r[k] is not None:
            check_positive(f"reward.{k}", r[k])
    if not 0 <= r.train.warmup_ratio < 1:
        raise bad_value("reward.train.warmup_ratio", r.train.warmup_ratio, "within [0, 1)")
    src = get_source(r.source, "reward.source")
    src.validate_reward(cfg)  # hub: a data set; tiny world: tiny models
    for part in ("gold", "onpolicy"):
        sub = r[part]
        if not sub.enabled:
            continue
        if not src.has_gold_scorer:
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
    _validate_recipe(r, cfg.model.get("arch"))


def _validate_recipe(r: Any, model_arch: Any) -> None:
    """objective, rounds, defects and arch of the `reward` group `r`."""
    check_choice("reward.objective", r.objective, OBJECTIVES)
    check_positive("reward.rounds", r.rounds)
    gold = get_source(r.source, "reward.source").has_gold_scorer
    tiny = gold and not r.path
    for key, value, on in (
        ("reward.objective", r.objective, r.objective == "process"),
        ("reward.rounds", r.rounds, r.rounds > 1),
        ("reward.defects.enabled", r.defects.enabled, r.defects.enabled),
    ):
        if on and not tiny:
            fix = "only the tiny world's gold scorer labels sentences, defects and new samples"
            raise bad_value(key, value, "its default with reward.source=hub or reward.path", fix)
    if r.objective == "process" and r.format != "plain":
        raise bad_value("reward.format", r.format, "plain for reward.objective=process")
    if r.knowledge.enabled and not gold and not r.path:  # with a path: unused
        fix = "it is fitted on the tiny world's gold-labelled pairs"
        raise bad_value("reward.knowledge.enabled", True, "false for reward.source=hub", fix)
    if r.rounds > 1 and not r.onpolicy.enabled:
        fix = "set reward.onpolicy.enabled=true, or reward.rounds=1"
        raise bad_value("reward.rounds", r.rounds, "1 without on-policy samples to relabel", fix)
    if RewardArchConf.overrides(r.arch):
        validate_arch(r.arch, model_arch, r.train.max_length)


def validate_arch(arch: Any, model_arch: Any, max_length: int) -> None:
    """A reward-model architecture (`reward.arch`, null fields from `model_arch`, the init
    model's `model.arch`) that Mistral can build and that reads sequences of up to `max_length`
    tokens (reward.train.max_length)."""
    keys = {"num_layers": "num_layers"} | {k: k for k in _ARCH_KEYS}
    if model_arch is None:
        fix = "reward.arch only applies to the tiny world's models: leave it null"
        raise bad_value("reward.arch", RewardArchConf.overrides(arch), "all null here", fix)
    a = {k: arch[k] if arch[k] is not None else model_arch.get(v) for k, v in keys.items()}
    for k in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads"):
        check_positive(f"reward.arch.{k}", a[k])
    if a["hidden_size"] % a["num_heads"] or (a["hidden_size"] // a["num_heads"]) % 2:
        raise bad_value(
            "reward.arch.hidden_size",
            a["hidden_size"],
            f"a multiple of num_heads={a['num_heads']} with an even head size (RoPE)",
        )
    if a["num_heads"] % a["num_kv_heads"]:
        raise bad_value(
            "reward.arch.num_kv_heads",
            a["num_kv_heads"],
            f"a divisor of num_heads={a['num_heads']}",
        )
    if (a["max_position_embeddings"] or max_length) < max_length:
        raise bad_value(
            "reward.arch.max_position_embeddings",
            a["max_position_embeddings"],
            f">= reward.train.max_length={max_length} (the longest sequence it reads)",
            "raise it, or lower reward.train.max_length",
        )


_ARCH_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_heads",
    "num_kv_heads",
    "max_position_embeddings",
)
