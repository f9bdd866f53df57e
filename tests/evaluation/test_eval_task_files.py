"""The tiny world's task YAMLs as lm-eval reads them: metric directions, data paths that follow
the artifact to its final (or moved) place, and how a stage learns that place."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from c2f_exp.evaluation.stage import EvalStage
from c2f_exp.evaluation.tasks import materialise_tinyworld, relocate_tasks
from c2f_exp.stages import final_dir

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TASKS = ["tinyworld_mc", "tinyworld_about"]


def _data_files(task_dir: Path, task: str) -> str:
    """The test file of `task` as lm-eval's task index read the YAML."""
    from lm_eval.tasks import TaskManager

    cfg = TaskManager(include_path=str(task_dir), include_defaults=False).task_index[task].cfg
    return cfg["dataset_kwargs"]["data_files"]["test"]


def test_lower_is_better_for_wrong_facts_and_repetition(tiny_artifact, tmp_path):
    from lm_eval.tasks import TaskManager

    dest = materialise_tinyworld(tiny_artifact, tmp_path / "tasks", TASKS)
    tasks = TaskManager(include_path=str(dest), include_defaults=False).load(TASKS)["tasks"]
    about = tasks["tinyworld_about"].higher_is_better()  # as lm-eval parsed the YAML
    assert about["wrong_facts"] is False and about["repetition_rate"] is False
    assert all(about[m] for m in ("gold_total", "correct_facts", "explained"))
    assert all(tasks["tinyworld_mc"].higher_is_better().values())


def test_relocate_points_yamls_at_the_moved_directory(tiny_artifact, tmp_path):
    built = materialise_tinyworld(tiny_artifact, tmp_path / "build" / "tasks", TASKS)
    moved = tmp_path / "final" / "tasks"
    shutil.copytree(built, moved)
    shutil.rmtree(tmp_path / "build")
    before = (moved / "tinyworld_about.yaml").read_text()
    changed = relocate_tasks(moved, moved)
    assert [p.name for p in changed] == ["tinyworld_about.yaml", "tinyworld_mc.yaml"]
    for task in TASKS:
        assert _data_files(moved, task) == str(moved / f"{task}.jsonl")
        assert Path(_data_files(moved, task)).is_file()
    after = (moved / "tinyworld_about.yaml").read_text()
    assert before.replace(str(tmp_path / "build"), str(tmp_path / "final")) == after
    assert relocate_tasks(moved, moved) == []  # idempotent: nothing rewritten


def test_publish_repairs_a_reused_artifact(tiny_artifact, tmp_path):
    art = tmp_path / "eval" / "key"
    materialise_tinyworld(tiny_artifact, tmp_path / ".tmp-key-1-2" / "lm_eval_tasks", TASKS)
    shutil.copytree(tmp_path / ".tmp-key-1-2", art)  # an older artifact: stale temp paths
    (art / "report.md").write_text("# report\n")
    EvalStage.publish(art, tmp_path / "run" / "eval")
    assert _data_files(art / "lm_eval_tasks", "tinyworld_mc") == str(
        art / "lm_eval_tasks" / "tinyworld_mc.jsonl"
    )
    assert (tmp_path / "run" / "eval" / "report.md").is_file()


def test_final_dir_from_context(tmp_path):
    ctx = SimpleNamespace(final_dir=None)
    assert final_dir(ctx, tmp_path / "plain") == tmp_path / "plain"  # run outside the pipeline
    ctx.final_dir = tmp_path / "given"
    assert final_dir(ctx, tmp_path / ".tmp-x-1-2") == tmp_path / "given"
