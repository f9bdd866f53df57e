"""`eval` stage: lm-eval suites, MT-Bench with a pluggable judge, text statistics, the report.

Orchestration only; the work is in `c2f_exp/evaluation/`. Writes into its artifact (and copies
the report to `<run>/eval/`): results.json, report.md, plots/, lm_eval/<model>/<task>.jsonl,
lm_eval_tasks/ (the tiny world's task YAMLs, their data paths naming the finished artifact, so
`lm_eval --tasks tinyworld_mc --include_path <artifact>/lm_eval_tasks` works),
mt_bench/model_answer/, mt_bench/model_judgment/.
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from c2f_exp.core import hub, layout
from c2f_exp.core.errors import ConfigError
from c2f_exp.sources import source_for
from c2f_exp.stages import StageContext, final_dir, subtree

if TYPE_CHECKING:
    from c2f_exp.config import C2FConfig, RehearsalConf
    from c2f_exp.evaluation.config import EvalConf

log = logging.getLogger(__name__)
REPORT_FILES = ("results.json", "report.md", "plots")
TASK_DIR = "lm_eval_tasks"


class EvalStage:
    name = "eval"
    checkpoints = False  # nothing to resume from: a failed build leaves no work dir

    def config_subtree(self, cfg: C2FConfig) -> dict[str, Any]:
        sub = {
            "eval": cfg.eval,
            "seed": cfg.seed,
            "model_paths": {r: getattr(cfg.model, r).path for r in ("base", "instruct")},
        }
        if layout.rehearsing(cfg):  # the rehearsal's caps change what is evaluated
            sub["rehearsal"] = cfg.model.rehearsal
        return subtree(sub)

    def preflight(self, cfg: C2FConfig) -> None:
        from c2f_exp.evaluation import harness, judges
        from c2f_exp.evaluation.config import TINYWORLD_TASKS
        from c2f_exp.evaluation.mt_bench_data import locate

        # config values: checked once, before any stage, by config.validate (EvalConf)
        e, stages = cfg.eval, list(cfg.stages)
        for name, path in e.models.items():
            key = f"eval.models.{name}"
            hub.check_local_weights(hub.resolve_model(path, key), key)
        for role in () if e.models else ("base", "instruct"):
            spec = getattr(cfg.model, role)
            if spec.path and not layout.rehearsing(cfg):  # rehearsal: prepare's tiny copies
                ref = hub.resolve_model(spec.path, f"model.{role}.path", spec.revision)
                hub.check_local_weights(ref, f"model.{role}.path")
            elif "prepare" not in stages:
                raise ConfigError(
                    f"eval: model.{role}.path is null and prepare does not run; "
                    "add prepare to stages or set eval.models"
                )
        m, mt = e.mt_bench, source_for(cfg, "eval.mt_bench.source")
        tiny = any(t in TINYWORLD_TASKS for t in e.lm_eval.tasks)
        if (tiny or (m.enabled and mt.reads_prepare)) and "prepare" not in stages:
            raise ConfigError("eval=tinyworld reads the prepare artifact: add prepare to stages")
        harness.preflight_tasks(list(e.lm_eval.tasks), list(e.lm_eval.include_path))
        if m.enabled:
            if m.question_file or not mt.reads_prepare:  # files, or FastChat's published ones
                locate(m, "question", download=False)
            if m.judge.type in judges.LLM_JUDGES:
                locate(m, "judge_prompts", download=False)
            if m.reference_answer_file:
                locate(m, "reference", download=False)
            judges.preflight(m.judge, stages)
            if m.judge.type in ("hf_local", "reward_model") and m.judge.model:
                hub.check_local_weights(m.judge.model, "eval.mt_bench.judge.model")

    def run(self, ctx: StageContext, out: Path) -> dict[str, Any]:
        from c2f_exp.evaluation.lineup import torch_threads

        with torch_threads(ctx.cfg.eval.num_threads):
            return self._run(ctx, out)

    def _run(self, ctx: StageContext, out: Path) -> dict[str, Any]:
        from c2f_exp.evaluation import judges, mt_bench, report, runner
        from c2f_exp.evaluation import lineup as models
        from c2f_exp.evaluation import tasks as tasks_mod

        e, secs = rehearsal_eval(ctx.cfg), {}
        prep = ctx.upstream["prepare"]["path"] if "prepare" in ctx.upstream else None
        refs = models.resolve_models(ctx)
        tasks, tm = runner.lm_eval_tasks(e, prep, out)
        data = runner.mt_bench_data(e, prep)
        if data is not None and layout.rehearsing(ctx.cfg):
            data.questions = per_category(data.questions, ctx.cfg.model.rehearsal)
        results: dict[str, dict] = {}
        answers: dict[str, list[dict]] = {}
        for ref in refs:
            results[ref.name], ans = runner.evaluate_model(ref, e, tasks, tm, data, out, secs)
            if ans is not None:
                answers[ref.name] = ans
        if data is not None:
            t0 = time.time()
            judge = judges.build(
                e.mt_bench.judge,
                data.prompts,
                prep,
                ctx.upstream,
                e.lm_eval.device,
                _calibration_pairs(ctx.cfg, prep),
            )
            for model, summary in mt_bench.grade(judge, data, answers, out / "mt_bench").items():
                results[model]["mt_bench"] = summary
            secs["mt_bench_judge"] = time.time() - t0
            for model, rows in answers.items() if e.text_stats.enabled else ():
                results[model]["text_stats"] = mt_bench.answer_text_stats(
                    rows, e.text_stats.repetition_n
                )
        meta = {
            "models": {r.name: {"path": r.path, "chat": r.chat} for r in refs},
            "seconds": secs,
            "lm_eval_tasks": tasks,
            "mt_bench": data
            and {
                "source": data.source,
                "questions": len(data.questions),
                "judge": e.mt_bench.judge.type,
            },
        }
        files = report.write_report(out, results, meta, tasks, list(e.key_metrics))
        _copy_report(out, ctx.stage_dir)
        final = final_dir(ctx, out)
        if (out / TASK_DIR).is_dir():  # lm-eval ran from the temp dir; users run from `final`
            tasks_mod.relocate_tasks(out / TASK_DIR, final / TASK_DIR)
        metrics = {
            f"{m}/{t}/{k}": results[m][t][k]
            for m in results
            for t, k in report.table_rows(results, tasks)
            if k in results[m].get(t, {})
        }
        ctx.tracker.log(metrics)
        report_name = Path(files["report"]).relative_to(out)
        log.info("eval report: %s (copy: %s)", final / report_name, ctx.stage_dir / report_name)
        return metrics

    @staticmethod
    def publish(art: Path, stage_dir: Path) -> None:
        """A reused artifact: repoint its task YAMLs at where it is now (older artifacts, a
        moved cache) and copy the report into `<run>/eval/`."""
        from c2f_exp.evaluation.tasks import relocate_tasks

        if (art / TASK_DIR).is_dir():
            for path in relocate_tasks(art / TASK_DIR, art / TASK_DIR):
                log.info("repointed %s's data_files at %s", path, art / TASK_DIR)
        _copy_report(art, stage_dir)


def _copy_report(out: Path, stage_dir: Path) -> None:
    """Copy the report into `<run>/eval/` (the artifact itself lives in the cache)."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:
        src = out / name
        if src.is_dir():
            shutil.copytree(src, stage_dir / name, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copy(src, stage_dir / name)


def rehearsal_eval(cfg: C2FConfig) -> EvalConf:
    """`eval`, or under the rehearsal (debug=micro on hub models) a copy with its caps: lm-eval
    `limit`, MT-Bench answer length."""
    if not layout.rehearsing(cfg):
        return cfg.eval
    r, e = cfg.model.rehearsal, copy.deepcopy(cfg.eval)
    limit = e.lm_eval.limit
    e.lm_eval.limit = r.lm_eval_limit if limit is None else min(limit, r.lm_eval_limit)
    e.mt_bench.max_new_tokens = min(e.mt_bench.max_new_tokens, r.max_new_tokens)
    return e


def per_category(questions: list[dict], r: RehearsalConf) -> list[dict]:
    """The first `r.mt_bench_per_category` questions of each category, in file order."""
    seen: dict[str, int] = {}
    keep = []
    for q in questions:
        c = str(q.get("category"))
        if seen.get(c, 0) < r.mt_bench_per_category:
            seen[c] = seen.get(c, 0) + 1
            keep.append(q)
    return keep


def _calibration_pairs(cfg: C2FConfig, prep: str | None) -> list[dict] | None:
    """A reward-model judge without a score range or calibration file on hub data calibrates
    on the reward data's test pairs (the tiny world's prepare writes its own file)."""
    j = cfg.eval.mt_bench.judge
    if str(j.type) != "reward_model" or j.score_low is not None or j.calibration_file:
        return None
    src = source_for(cfg, "reward.source")
    if src.reads_prepare:
        return None
    return src.preference_pairs(cfg.reward, None)[1]
