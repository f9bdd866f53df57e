"""Typed schema of the `eval` config group (conf/eval/*.yaml) and its semantic checks.

`EvalConf` is the dataclass the root schema holds as field `eval`; OmegaConf rejects unknown keys,
wrong types and bad choices at composition. Each class's `__post_init__` checks what types cannot
express (ranges, rules between its fields) and raises `ConfigError` naming the key and the fix;
rules against other groups (the data source) are config.validate's.

The defaults here are the only ones: the tiny world's evaluation (docs/method.md §3, §5;
conf/eval/tinyworld.yaml holds only its MT-Bench temperatures): lm-eval tasks built at run time
from the prepare artifact, the two-turn MT-Bench-style set judged by the gold scorer, and text
statistics of the answers (~1 min for base + instruct). Other options (eval=general11) hold only
what they change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from c2f_exp.core.choices import ModelDType, choice
from c2f_exp.core.errors import bad_value, check_seed
from c2f_exp.sources import get_source

TINYWORLD_TASKS = ("tinyworld_mc", "tinyworld_about")
TINYWORLD_KEY_METRICS = (  # "task/metric" for the report's bar chart
    "tinyworld_mc/acc",
    "tinyworld_about/gold_total",
    "tinyworld_about/correct_facts",
    "mt_bench/average",
    "text_stats/mean_tokens",
    "text_stats/distinct_2",
    "text_stats/repetition_rate",
    "text_stats/compression_ratio",
)
JudgeType = choice(
    "JudgeType", ("openai_compatible", "hf_local", "reward_model", "tinyworld_gold"), __name__
)
MTBenchSource = choice("MTBenchSource", ("tinyworld", "fastchat"), __name__)
RepoType = choice("RepoType", ("space", "dataset", "model"), __name__)  # Hugging Face hub's
JUDGE_TYPES, MODEL_DTYPES = JudgeType.values(), ModelDType.values()
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _chat_defaults() -> dict[str, bool]:
    # base and coarse (PPO from the base, no SFT) are prompted plainly; instruct-style with chat
    # (models not listed: chat)
    return {"base": False, "coarse": False, "instruct": True, "fine": True}


@dataclass
class LmEvalConf:
    """lm-evaluation-harness settings (`simple_evaluate`)."""

    tasks: list[str] = field(default_factory=lambda: list(TINYWORLD_TASKS))  # [] = no lm-eval
    num_fewshot: dict[str, int] = field(default_factory=dict)  # per task; absent: task default
    batch_size: str = "64"  # "auto", "auto:N" or an integer
    max_batch_size: int = 64
    device: str = "auto"  # auto = cuda when available, else cpu
    dtype: ModelDType = ModelDType.float32
    # examples per task (int) or fraction (< 1); null = all; e.g. 100 for a smoke run
    limit: float | None = None
    include_path: list[str] = field(default_factory=list)  # extra task YAML directories
    max_length: int | None = None
    bootstrap_iters: int = 0  # stderr bootstrap; 0 = off (fast)
    log_samples: bool = True  # write per-example outputs under lm_eval/<model>/

    def __post_init__(self) -> None:
        _check_batch_size("batch_size", self.batch_size)
        if self.limit is not None and not self.limit > 0:
            raise bad_value("limit", self.limit, "> 0 (a count, or a fraction < 1)")
        for task, k in self.num_fewshot.items():
            if k < 0:
                raise bad_value(f"num_fewshot.{task}", k, ">= 0")


@dataclass
class JudgeConf:
    """Who grades MT-Bench answers (single-answer grading, scores 1-10)."""

    type: JudgeType = JudgeType.tinyworld_gold
    model: str | None = None  # API model name, or a local model dir (hf_local, reward_model)
    base_url: str | None = None  # openai_compatible: e.g. http://127.0.0.1:8000/v1
    api_key_env: str | None = None  # NAME of the env var holding the key (never the key)
    temperature: float = 0.0
    retry_temperature: float = 0.7  # re-asks after a judgment without [[rating]] sample
    max_tokens: int = 2048
    retries: int = 3  # extra asks when no [[rating]] can be extracted
    request_retries: int = 3  # HTTP retries on 429/5xx/connection errors
    retry_backoff_s: float = 1.0  # first HTTP retry waits this long, then doubling (max 30 s)
    timeout_s: float = 120.0
    parallel: int = 1  # concurrent judge calls
    reference_model: str = "gpt-4"  # reference answers: reference_answer/<this>.jsonl
    reference_categories: list[str] = field(
        default_factory=lambda: ["math", "reasoning", "coding"]
    )  # reference-guided prompts
    dtype: ModelDType = ModelDType.auto  # hf_local / reward_model
    score_low: float | None = None  # reward_model: RM score mapped to 1
    score_high: float | None = None  # reward_model: RM score mapped to 10
    calibration_file: str | None = None  # reward_model: preference pairs to calibrate on


@dataclass
class MTBenchConf:
    """Two-turn answers and their judgments, in FastChat's llm_judge layout."""

    enabled: bool = True
    # tinyworld: prepare's data/two_turn.jsonl (categories: more, why) | fastchat: the 80
    # questions
    source: MTBenchSource = MTBenchSource.tinyworld
    question_file: str | None = None  # explicit files win over any other source
    judge_prompts_file: str | None = None
    reference_answer_file: str | None = None
    hub_repo: str = "lmsys/mt-bench"  # last resort when online: FastChat's published files
    hub_repo_type: RepoType = RepoType.space
    max_new_tokens: int = 128  # a complete, explained tiny-world answer needs > 100 tokens
    temperatures: dict[str, float] = field(default_factory=dict)  # per category (FastChat's)
    default_temperature: float = 0.7
    batch_size: int = 64
    limit: int | None = None  # first N questions; null = all
    judge: JudgeConf = field(default_factory=JudgeConf)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise bad_value("max_new_tokens", self.max_new_tokens, ">= 1")
        if self.limit is not None and self.limit < 1:
            raise bad_value("limit", self.limit, ">= 1 or null")
        for cat, t in {**self.temperatures, "default": self.default_temperature}.items():
            if t < 0:
                raise bad_value(f"temperatures.{cat}", t, ">= 0")
        if self.enabled:  # who grades, only when anything is graded
            gold = get_source(self.source, "eval.mt_bench.source").has_gold_scorer
            _check_judge(self.judge, gold)


@dataclass
class TextStatsConf:
    enabled: bool = True
    repetition_n: int = 3  # n of the within-answer n-gram repetition rate


@dataclass
class EvalConf:
    name: str = MISSING
    # {name: path}; {} = every model the run produced (base, instruct, coarse, fine), e.g.
    # eval.models='{base:/m/base,mine:/m/mine}'
    models: dict[str, str] = field(default_factory=dict)
    # per model: prompt with the tokenizer's chat template? (unlisted models: yes)
    chat: dict[str, bool] = field(default_factory=_chat_defaults)
    seed: int = 0
    # torch intra-op threads during eval; null = unchanged. 1: tiny models run faster on one
    # thread (2 shared cores: 20 CPU-s and 50 s wall vs 93 CPU-s and 240 s with 2 threads)
    num_threads: int | None = 1
    key_metrics: list[str] = field(default_factory=lambda: list(TINYWORLD_KEY_METRICS))
    lm_eval: LmEvalConf = field(default_factory=LmEvalConf)
    mt_bench: MTBenchConf = field(default_factory=MTBenchConf)
    text_stats: TextStatsConf = field(default_factory=TextStatsConf)

    def __post_init__(self) -> None:
        for name in list(self.models) + list(self.chat):
            if not _MODEL_NAME.match(str(name)):
                raise bad_value(f"models.{name}", name, "a name of letters, digits, _ . -")
        if self.num_threads is not None and self.num_threads < 1:
            raise bad_value("num_threads", self.num_threads, ">= 1 or null")
        if self.text_stats.repetition_n < 1:
            raise bad_value("text_stats.repetition_n", self.text_stats.repetition_n, ">= 1")
        check_seed("seed", self.seed)


def _check_batch_size(key: str, value: str) -> None:
    v = str(value)
    if v == "auto" or (v.startswith("auto:") and v[5:].isdigit()) or (v.isdigit() and int(v)):
        return
    raise bad_value(key, value, "'auto', 'auto:N' or a positive integer")


def _check_judge(j: Any, has_gold_scorer: bool) -> None:
    if j.api_key_env is not None and not _ENV_NAME.match(j.api_key_env):
        raise bad_value(
            "judge.api_key_env",
            "<hidden>",
            "the NAME of an environment variable (e.g. OPENAI_API_KEY)",
            "export the key in that variable; never put the key in a config",
        )
    if j.type == "openai_compatible":
        for k in ("base_url", "model"):
            if not getattr(j, k):
                raise bad_value(f"judge.{k}", getattr(j, k), "set for openai_compatible")
    if j.type == "hf_local" and not j.model:
        raise bad_value("judge.model", j.model, "a local chat model for hf_local")
    if j.type == "tinyworld_gold" and not has_gold_scorer:
        raise bad_value(
            "judge.type",
            j.type,
            "an LLM or reward-model judge",
            "the gold scorer only knows the tiny world's questions",
        )
    if j.retries < 0 or j.request_retries < 0 or j.parallel < 1:
        raise bad_value("judge.retries", j.retries, ">= 0 (parallel >= 1)")
    if (j.score_low is None) != (j.score_high is None) or (
        j.score_low is not None and not j.score_high > j.score_low
    ):
        raise bad_value(
            "judge.score_high",
            j.score_high,
            "set together with score_low and greater than it",
        )
