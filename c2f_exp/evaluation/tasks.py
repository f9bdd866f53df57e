"""The tiny world's lm-eval tasks, written at run time from a `prepare` artifact.

lm-eval resolves `data_files` from the cwd, not from the YAML, so the YAMLs hold absolute paths
(STACK_NOTES, lm-eval). They are written into the eval stage's temp dir, and `relocate_tasks`
points them at the finished artifact (and again when a moved cache is reused). Two tasks:

* `tinyworld_mc` (multiple_choice): "what color is the X ?" with full-sentence choices
  ("the X is colored red .", ...) built from `data/mc_questions.jsonl`. All choices share their
  prefix, so the comparison is the value token given the sentence, for plain and chat prompts.
* `tinyworld_about` (generate_until): "tell me about the X ." for the held-out entities, scored
  by the gold scorer (`process_results: !function utils.process_about`; the `utils.py` written
  next to the YAML re-exports `process_about` below). Each doc carries the world's path.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from c2f_exp.core import layout
from c2f_exp.core.errors import ConfigError
from c2f_exp.core.layout import read_jsonl, write_jsonl
from c2f_exp.evaluation.config import TINYWORLD_TASKS

ABOUT_METRICS = (
    "gold_total",
    "correct_facts",
    "wrong_facts",
    "explained",
    "repetition_rate",
    "frac_ge1_correct",
)
LOWER_IS_BETTER = frozenset({"wrong_facts", "repetition_rate"})
_UTILS = (
    '"""Written by c2f_exp.evaluation.tasks: lm-eval loads metrics from a file next to the '
    'YAML."""\nfrom c2f_exp.evaluation.tasks import process_about  # noqa: F401\n'
)


def _yaml(cfg: dict[str, Any], extra: str = "") -> str:
    """YAML text with JSON flow values (valid YAML) plus raw lines (`!function` tags)."""
    return "".join(f"{k}: {json.dumps(v)}\n" for k, v in cfg.items()) + extra


def _task(name: str, data: Path, output_type: str, **kw: Any) -> dict[str, Any]:
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "test_split": "test",
        "output_type": output_type,
        **kw,
        "metadata": {"version": 1.0},
    }


def _mean(metric: str) -> dict[str, Any]:
    better = metric not in LOWER_IS_BETTER
    return {"metric": metric, "aggregation": "mean", "higher_is_better": better}


def _write_mc(src: Path, dest: Path) -> None:
    from c2f_exp.tinyworld.world import ATTR_BY_NAME

    rows = read_jsonl(layout.data_file(src, "mc_questions.jsonl"))
    for r in rows:  # full-sentence choices: "the X is colored red ."
        attr = ATTR_BY_NAME[r["attribute"]]
        r["answers"] = [f"{attr.render(r['entity'], v)} ." for v in r["choices"]]
    write_jsonl(dest / "tinyworld_mc.jsonl", rows)
    cfg = _task(
        "tinyworld_mc",
        dest / "tinyworld_mc.jsonl",
        "multiple_choice",
        doc_to_text="{{question}}",
        doc_to_choice="{{answers}}",
        doc_to_target="gold",
        metric_list=[_mean("acc"), _mean("acc_norm")],
    )
    (dest / "tinyworld_mc.yaml").write_text(_yaml(cfg))


def _write_about(world_path: Path, dest: Path, max_gen_toks: int) -> None:
    from c2f_exp.tinyworld.world import PROMPT_TEMPLATE, World

    world = World.load(world_path)
    rows = [
        {"prompt": PROMPT_TEMPLATE.format(e=e), "entity": e, "world_path": str(world_path)}
        for e in world.heldout_entities
    ]
    write_jsonl(dest / "tinyworld_about.jsonl", rows)
    gen = {"until": ["</s>"], "max_gen_toks": max_gen_toks, "do_sample": False}
    cfg = _task(
        "tinyworld_about",
        dest / "tinyworld_about.jsonl",
        "generate_until",
        doc_to_text="{{prompt}}",
        doc_to_target="",
        generation_kwargs=gen,
        metric_list=[_mean(m) for m in ABOUT_METRICS],
    )
    extra = "process_results: !function utils.process_about\n"
    (dest / "tinyworld_about.yaml").write_text(_yaml(cfg, extra))
    (dest / "utils.py").write_text(_UTILS)


def materialise_tinyworld(
    prepare_dir: str | Path, dest: Path, tasks: list[str], max_gen_toks: int = 128
) -> Path:
    """Write the requested tiny-world task YAMLs, their data and `utils.py` into `dest`.

    Args:
        prepare_dir: a prepare artifact (world.json, data/mc_questions.jsonl).
        dest: directory to pass to `TaskManager(include_path=...)`.
        tasks: names from `TINYWORLD_TASKS`.
        max_gen_toks: generation limit of `tinyworld_about`.
    Returns:
        `dest`.
    """
    src = Path(prepare_dir)
    world_path = layout.world_file(src).resolve()
    if not world_path.is_file():
        raise ConfigError(
            f"{src} is not a tiny-world prepare artifact (no world.json); add prepare to stages"
        )
    unknown = [t for t in tasks if t not in TINYWORLD_TASKS]
    if unknown:
        raise ConfigError(f"unknown tiny-world task(s) {unknown}; use {list(TINYWORLD_TASKS)}")
    dest.mkdir(parents=True, exist_ok=True)
    if "tinyworld_mc" in tasks:
        _write_mc(src, dest)
    if "tinyworld_about" in tasks:
        _write_about(world_path, dest, max_gen_toks)
    return dest


def relocate_tasks(task_dir: Path, data_dir: Path) -> list[Path]:
    """Point the `data_files` of the task YAMLs in `task_dir` at the same file names in
    `data_dir` (the directory's final place: the eval stage builds it in a temp dir).

    Returns the rewritten YAMLs. Only the `dataset_kwargs:` line `_yaml` wrote is touched.
    """
    changed = []
    for path in sorted(task_dir.glob("tinyworld_*.yaml")):
        lines = path.read_text().splitlines(keepends=True)
        for i, line in enumerate(lines):
            if line.startswith("dataset_kwargs: "):
                kw = json.loads(line.removeprefix("dataset_kwargs: "))
                files = kw["data_files"]
                files.update({k: str(data_dir / Path(v).name) for k, v in files.items()})
                lines[i] = f"dataset_kwargs: {json.dumps(kw)}\n"
        text = "".join(lines)
        if text != path.read_text():
            path.write_text(text)
            changed.append(path)
    return changed


@lru_cache(maxsize=8)
def _scorer(world_path: str) -> Any:
    from c2f_exp.tinyworld.scorer import GoldScorer
    from c2f_exp.tinyworld.world import World

    return GoldScorer(World.load(world_path))


def process_about(doc: dict, results: list[str]) -> dict[str, float]:
    """lm-eval `process_results` for `tinyworld_about`: gold-scorer counts of one answer."""
    s = _scorer(doc["world_path"]).score(results[0], doc["entity"])
    return {
        "gold_total": s.total(),
        "correct_facts": float(s.correct),
        "wrong_facts": float(s.wrong),
        "explained": float(s.explained),
        "repetition_rate": s.repetition_rate,
        "frac_ge1_correct": float(s.correct >= 1),
    }
