"""Typed schema of the `reward` config group (`conf/reward/*.yaml`) and its validation.

The defaults here are the only ones: the tiny world's reward model (conf/reward/tinyworld.yaml
only names the option), Bradley-Terry on preference pairs + a learned knowledge head
(docs/reward.md). They are ours; the measurements behind them: docs/results.md. Other options
(reward=hh_rlhf) hold only what they change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from c2f_exp.core.choices import Source, choice
from c2f_exp.core.errors import bad_value, check_positive, check_save_steps
from c2f_exp.sources import get_source

RewardFormat = choice("RewardFormat", ("plain", "chat"), __name__)
RewardInit = choice("RewardInit", ("base", "instruct"), __name__)
RewardObjective = choice("RewardObjective", ("pairwise", "process"), __name__)


@dataclass
class RewardTrainConf:
    """Bradley-Terry training with TRL's RewardTrainer."""

    epochs: float = 1.0  # tiny world: 3 or 6 epochs gained <= 3 points at 3-6x the time
    max_steps: int = -1  # > 0 overrides epochs
    lr: float = 1e-3  # tiny world: 3e-3 gave the same agreement
    batch_size: int = 16  # pairs per device step
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_length: int = 512  # pairs with a longer side are dropped (TRL's filter)
    # BT margin = scale x gold gap where known (Llama 2 eq. 2); 0: none. Tiny world: margin =
    # gold gap gave no gain (78% vs 78%)
    margin_scale: float = 0.0
    center_rewards_coefficient: float | None = 0.01  # keeps scores near 0 (Eisenstein 2023)
    bf16: bool = False
    gradient_checkpointing: bool = False
    # a checkpoint every N optimizer steps (and at the end) in the stage's work dir; a killed
    # reward stage resumes training from it (trainer_resume.py). 0: none
    save_steps: int = 50

    def __post_init__(self) -> None:
        for k in ("epochs", "lr", "batch_size", "grad_accum", "max_length"):
            check_positive(k, getattr(self, k))
        check_save_steps("save_steps", self.save_steps)
        if not 0 <= self.warmup_ratio < 1:
            raise bad_value("warmup_ratio", self.warmup_ratio, "within [0, 1)")


def _check_sampling(part: Any) -> None:
    """An enabled gold check or on-policy sampling: answers to compare in pairs."""
    if part.enabled:
        check_positive("max_new_tokens", part.max_new_tokens)
        if part.samples_per_prompt < 2:
            want = ">= 2 (answers are compared in pairs)"
            raise bad_value("samples_per_prompt", part.samples_per_prompt, want)


@dataclass
class GoldEvalConf:
    """Agreement with the tiny world's gold scorer on answers freshly sampled for held-out
    entities."""

    enabled: bool = True
    samples_per_prompt: int = 6  # answers sampled per held-out prompt; all pairs compared
    max_prompts: int | None = None  # null: every held-out entity
    max_new_tokens: int = 96
    defect_pairs_per_kind: int | None = 200  # pairs differing by one defect, each kind; null: all

    def __post_init__(self) -> None:
        _check_sampling(self)


@dataclass
class DefectConf:
    """Training pairs that isolate one defect each (wrong fact, repeat, missing explanation,
    off-topic fact), edited from the on-policy answers in equal shares (reward/defects.py)."""

    enabled: bool = False  # tiny world: no overall gain, at 3x the time


@dataclass
class KnowledgeConf:
    """A learned head over the init LM's surprisal on top of the classifier (knowledge_reward.py):
    the classifier alone cannot tell a true fact from a false one; the LM can."""

    # ours: a head on the base LM's surprisal (reward/knowledge.py): agreement on wrong-fact
    # pairs 0.49 -> 0.99 (docs/results.md)
    enabled: bool = True
    # ours: + sentence counts (all / distinct and free of contradictions): agreement on repeat
    # pairs 0.55 -> 0.78; held-out agreement 0.83 -> 0.85 on the default world, 0.86-0.87 ->
    # 0.90-0.91 on another (docs/results.md)
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
        if a is None:
            return {}
        items = a.items() if hasattr(a, "items") else vars(a).items()
        return {k: v for k, v in items if v is not None}


@dataclass
class OnPolicyConf:
    """Extra training pairs: answers sampled from the init policy for the training prompts,
    ordered by the gold scorer (the tiny world's labeller) -- InstructGPT's recipe of labelling
    the model's own samples, so the reward model sees the text PPO will show it."""

    enabled: bool = True  # the largest lever in the tiny world (static pairs alone: 58%)
    samples_per_prompt: int = 10  # 6: 75% agreement, ~2x faster; 16: 84%, ~2.5x slower
    max_new_tokens: int = 96
    min_margin: float = 0.25  # smallest gold difference made a pair

    def __post_init__(self) -> None:
        _check_sampling(self)


@dataclass
class RewardConf:
    name: str = MISSING
    # tinyworld: data/preferences_*.jsonl of prepare | hub: dataset
    source: Source = Source.tinyworld
    # an existing reward model (dir or hub id): no training (its vocabulary is checked)
    path: str | None = None
    # the model the reward model starts from (base | instruct); base: it reads text as the
    # base does
    init: RewardInit = RewardInit.base
    # plain: "<s> prompt answer</s>", as the tiny base was pretrained | chat: the chat template
    format: RewardFormat = RewardFormat.plain
    dataset: str | None = None  # hub preference data set (source=hub)
    train_split: str = "train"
    test_split: str = "test"
    max_train_pairs: int | None = None  # null: all
    max_test_pairs: int | None = None  # null: all (tiny world: every held-out-entity pair)
    eval_batch_size: int = 64
    # pairwise: Bradley-Terry (TRL) | process: per-sentence gold gains, summed
    # (reward/process.py); tiny world: process rewards repeats
    objective: RewardObjective = RewardObjective.pairwise
    # > 1: iterated labelling of best-of-2 answers under the current RM; tiny world: 2 gave no
    # gain at 6x the time
    rounds: int = 1
    # all null: the init model's (model.arch); tiny world: num_layers 6 grew it for no gain
    arch: RewardArchConf = field(default_factory=RewardArchConf)
    defects: DefectConf = field(default_factory=DefectConf)
    knowledge: KnowledgeConf = field(default_factory=KnowledgeConf)
    train: RewardTrainConf = field(default_factory=RewardTrainConf)
    gold: GoldEvalConf = field(default_factory=GoldEvalConf)
    onpolicy: OnPolicyConf = field(default_factory=OnPolicyConf)

    def __post_init__(self) -> None:
        """The group's own rules (no I/O); those that need another group (the init model's
        architecture, model.source) are config.validate's."""
        check_positive("eval_batch_size", self.eval_batch_size)
        for k in ("max_train_pairs", "max_test_pairs"):
            if getattr(self, k) is not None:
                check_positive(k, getattr(self, k))
        check_positive("rounds", self.rounds)
        gold = get_source(self.source, "reward.source").has_gold_scorer
        for part in ("gold", "onpolicy"):
            if getattr(self, part).enabled and not gold:
                fix = "only the tiny world has a gold scorer"
                raise bad_value(f"{part}.enabled", True, "false for reward.source=hub", fix)
        tiny = gold and not self.path
        for key, value, on in (
            ("objective", self.objective, self.objective == RewardObjective.process),
            ("rounds", self.rounds, self.rounds > 1),
            ("defects.enabled", self.defects.enabled, self.defects.enabled),
        ):
            if on and not tiny:
                fix = "only the tiny world's gold scorer labels sentences, defects and new samples"
                raise bad_value(
                    key, value, "its default with reward.source=hub or reward.path", fix
                )
        if self.objective == RewardObjective.process and self.format != RewardFormat.plain:
            raise bad_value("format", self.format, "plain for reward.objective=process")
        if self.knowledge.enabled and not gold and not self.path:  # with a path: unused
            fix = "it is fitted on the tiny world's gold-labelled pairs"
            raise bad_value("knowledge.enabled", True, "false for reward.source=hub", fix)
        if self.rounds > 1 and not self.onpolicy.enabled:
            fix = "set reward.onpolicy.enabled=true, or reward.rounds=1"
            raise bad_value("rounds", self.rounds, "1 without on-policy samples to relabel", fix)


def validate_arch(arch: Any, model_arch: Any, max_length: int) -> None:
    """A reward-model architecture (`reward.arch`, null fields from `model_arch`, the init
    model's `model.arch`) that Mistral can build and that reads sequences of up to `max_length`
    tokens (reward.train.max_length)."""
    keys = {"num_layers": "num_layers"} | {k: k for k in _ARCH_KEYS}
    if model_arch is None:
        fix = "reward.arch only applies to the tiny world's models: leave it null"
        raise bad_value("reward.arch", RewardArchConf.overrides(arch), "all null here", fix)
    a = {k: getattr(arch, k) for k in keys}
    a = {k: getattr(model_arch, keys[k], None) if v is None else v for k, v in a.items()}
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
