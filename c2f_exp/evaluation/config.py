"""Typed schema of the `eval` config group (conf/eval/*.yaml) and its semantic checks.

`EvalConf` is the dataclass the root schema holds as field `eval`; OmegaConf rejects unknown keys
and wrong types at composition. `validate_eval(cfg)` checks what types cannot express (choices,
ranges, cross-field rules) and raises `ConfigError` naming the key and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig

from c2f_exp.core.choices import ModelDType, choice
from c2f_exp.core.errors import bad_value
from c2f_exp.sources import source_for

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
JUDGE_TYPES, MODEL_DTYPES = JudgeType.values(), ModelDType.values()
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _chat_defaults() -> dict[str, bool]:
    # base and coarse (PPO from the base, no SFT) are prompted plainly; instruct-style with chat
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
    limit: float | None = None  # examples per task (int) or fraction (< 1); null = all
    include_path: list[str] = field(default_factory=list)  # extra task YAML directories
    max_length: int | None = None
    bootstrap_iters: int = 0  # stderr bootstrap; 0 = off (fast)
    log_samples: bool = True  # write per-example outputs under lm_eval/<model>/


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
    source: MTBenchSource = MTBenchSource.tinyworld  # tinyworld: prepare's two-turn set |
    # fastchat: the 80 questions
    question_file: str | None = None  # explicit files win over any other source
    judge_prompts_file: str | None = None
    reference_answer_file: str | None = None
    hub_repo: str = "lmsys/mt-bench"  # last resort when online: FastChat's published files
    hub_repo_type: str = "space"
    max_new_tokens: int = 128  # a complete, explained tiny-world answer needs > 100 tokens
    temperatures: dict[str, float] = field(default_factory=dict)  # per category (FastChat's)
    default_temperature: float = 0.7
    batch_size: int = 64
    limit: int | None = None  # first N questions; null = all
    judge: JudgeConf = field(default_factory=JudgeConf)


@dataclass
class TextStatsConf:
    enabled: bool = True
    repetition_n: int = 3  # n of the within-answer n-gram repetition rate


@dataclass
class EvalConf:
    name: str = MISSING
    models: dict[str, str] = field(default_factory=dict)  # {} = every model the run produced
    chat: dict[str, bool] = field(default_factory=_chat_defaults)  # per model: chat template?
    seed: int = 0
    num_threads: int | None = 1  # torch intra-op threads during eval; null = unchanged
    key_metrics: list[str] = field(default_factory=lambda: list(TINYWORLD_KEY_METRICS))
    lm_eval: LmEvalConf = field(default_factory=LmEvalConf)
    mt_bench: MTBenchConf = field(default_factory=MTBenchConf)
    text_stats: TextStatsConf = field(default_factory=TextStatsConf)


def _check_batch_size(key: str, value: str) -> None:
    v = str(value)
    if v == "auto" or (v.startswith("auto:") and v[5:].isdigit()) or (v.isdigit() and int(v)):
        return
    raise bad_value(key, value, "'auto', 'auto:N' or a positive integer")


def _check_judge(j: Any, has_gold_scorer: bool) -> None:
    if j.api_key_env is not None and not _ENV_NAME.match(j.api_key_env):
        raise bad_value(
            "eval.mt_bench.judge.api_key_env",
            "<hidden>",
            "the NAME of an environment variable (e.g. OPENAI_API_KEY)",
            "export the key in that variable; never put the key in a config",
        )
    if j.type == "openai_compatible":
        for k in ("base_url", "model"):
            if not j[k]:
                raise bad_value(f"eval.mt_bench.judge.{k}", j[k], "set for openai_compatible")
    if j.type == "hf_local" and not j.model:
        raise bad_value("eval.mt_bench.judge.model", j.model, "a local chat model for hf_local")
    if j.type == "tinyworld_gold" and not has_gold_scorer:
        raise bad_value(
            "eval.mt_bench.judge.type",
            j.type,
            "an LLM or reward-model judge",
            "the gold scorer only knows the tiny world's questions",
        )
    if j.retries < 0 or j.request_retries < 0 or j.parallel < 1:
        raise bad_value("eval.mt_bench.judge.retries", j.retries, ">= 0 (parallel >= 1)")
    if (j.score_low is None) != (j.score_high is None) or (
        j.score_low is not None and not j.score_high > j.score_low
    ):
        raise bad_value(
            "eval.mt_bench.judge.score_high",
            j.score_high,
            "set together with score_low and greater than it",
        )


def validate_eval(cfg: DictConfig) -> None:
    """Semantic checks of `cfg.eval` (the root config is needed for cross-group rules)."""
    e = cfg.eval
    for name in list(e.models) + list(e.chat):
        if not _MODEL_NAME.match(str(name)):
            raise bad_value(f"eval.models.{name}", name, "a name of letters, digits, _ . -")
    lm = e.lm_eval
    _check_batch_size("eval.lm_eval.batch_size", lm.batch_size)
    if lm.limit is not None and not lm.limit > 0:
        raise bad_value("eval.lm_eval.limit", lm.limit, "> 0 (a count, or a fraction < 1)")
    for task, k in lm.num_fewshot.items():
        if k < 0:
            raise bad_value(f"eval.lm_eval.num_fewshot.{task}", k, ">= 0")
    tiny = [t for t in lm.tasks if t in TINYWORLD_TASKS]
    data = source_for(cfg)
    if tiny and not data.reads_prepare:
        raise bad_value(
            "eval.lm_eval.tasks",
            list(lm.tasks),
            "tasks without tinyworld_*",
            "the tiny world's tasks need data=tinyworld",
        )
    m, mt = e.mt_bench, source_for(cfg, "eval.mt_bench.source")
    if mt.reads_prepare and not data.reads_prepare and not m.question_file:
        raise bad_value(
            "eval.mt_bench.source",
            m.source,
            "fastchat for hub data",
            "or set eval.mt_bench.question_file",
        )
    if m.max_new_tokens < 1 or m.batch_size < 1:
        raise bad_value("eval.mt_bench.max_new_tokens", m.max_new_tokens, ">= 1")
    if m.limit is not None and m.limit < 1:
        raise bad_value("eval.mt_bench.limit", m.limit, ">= 1 or null")
    for cat, t in {**m.temperatures, "default": m.default_temperature}.items():
        if t < 0:
            raise bad_value(f"eval.mt_bench.temperatures.{cat}", t, ">= 0")
    if m.enabled:
        _check_judge(m.judge, mt.has_gold_scorer)
    if e.num_threads is not None and e.num_threads < 1:
        raise bad_value("eval.num_threads", e.num_threads, ">= 1 or null")
    if e.text_stats.repetition_n < 1:
        raise bad_value("eval.text_stats.repetition_n", e.text_stats.repetition_n, ">= 1")
