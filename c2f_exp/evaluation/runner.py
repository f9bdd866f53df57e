"""Steps of the eval stage for one model, and the inputs they share (tasks, MT-Bench data)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from c2f_exp.evaluation import harness, mt_bench
from c2f_exp.evaluation import lineup as models
from c2f_exp.evaluation.config import TINYWORLD_TASKS
from c2f_exp.evaluation.mt_bench_data import MTBenchData, load_data, write_jsonl

if TYPE_CHECKING:
    from c2f_exp.evaluation.config import EvalConf

log = logging.getLogger(__name__)


def lm_eval_tasks(ecfg: EvalConf, prepare_dir: str | None, out: Path) -> tuple[list[str], Any]:
    """The configured task names and a TaskManager that finds them (tiny-world tasks are
    written into `<out>/lm_eval_tasks/` first)."""
    from c2f_exp.evaluation.tasks import materialise_tinyworld

    tasks, include = list(ecfg.lm_eval.tasks), list(ecfg.lm_eval.include_path)
    tiny = [t for t in tasks if t in TINYWORLD_TASKS]
    if tiny:
        dest = materialise_tinyworld(
            prepare_dir, out / "lm_eval_tasks", tiny, ecfg.mt_bench.max_new_tokens
        )
        include.append(str(dest))
    return tasks, harness.task_manager(tasks, include) if tasks else None


def mt_bench_data(ecfg: EvalConf, prepare_dir: str | None) -> MTBenchData | None:
    from c2f_exp.evaluation.judges import LLM_JUDGES

    if not ecfg.mt_bench.enabled:
        return None
    return load_data(ecfg.mt_bench, prepare_dir, ecfg.mt_bench.judge.type in LLM_JUDGES)


def evaluate_model(
    ref: models.ModelRef,
    ecfg: EvalConf,
    tasks: list[str],
    tm: Any,
    data: MTBenchData | None,
    out: Path,
    secs: dict[str, float],
) -> tuple[dict[str, dict[str, float]], list[dict] | None]:
    """lm-eval results {task: {metric: value}} and MT-Bench answers (None without MT-Bench)."""
    t0 = time.time()
    model, tok = models.load(ref, ecfg.lm_eval.dtype, ecfg.lm_eval.device)
    log.info("eval %s (%s, %s prompts)", ref.name, ref.path, "chat" if ref.chat else "plain")
    results: dict[str, dict[str, float]] = {}
    if tasks:
        samples = out / "lm_eval" / ref.name if ecfg.lm_eval.log_samples else None
        results = harness.evaluate(
            model, tok, ref.chat, tasks, ecfg.lm_eval, tm, samples, ecfg.seed
        )
        secs[f"lm_eval/{ref.name}"] = time.time() - t0
    answers = None
    if data is not None:
        t1 = time.time()
        answers = mt_bench.answer_questions(
            model, tok, ref.name, data.questions, ref.chat, ecfg.mt_bench, ecfg.seed
        )
        write_jsonl(out / "mt_bench" / "model_answer" / f"{ref.name}.jsonl", answers)
        secs[f"mt_bench_answers/{ref.name}"] = time.time() - t1
    del model, tok
    models.free_memory()
    return results, answers
