"""lm-evaluation-harness through its Python API, and a data preflight before any model loads.

`simple_evaluate(model=HFLM(pretrained=<loaded model>, tokenizer=...), tasks, task_manager)` with
`TaskManager(include_path=...)`: the tiny world's tasks live in a run directory (tasks.py), the
standard ones in lm-eval. Offline, a hub task fails only after the model has loaded
(STACK_NOTES), so `preflight_tasks` resolves every task to its data sets from lm-eval's task index
(YAML only, no data) and checks each one is local, cached or reachable: one named error.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from c2f_exp.core import hub
from c2f_exp.core.errors import ConfigError
from c2f_exp.evaluation.config import TINYWORLD_TASKS

if TYPE_CHECKING:
    from c2f_exp.evaluation.config import LmEvalConf

log = logging.getLogger(__name__)
_BUILDERS = ("json", "csv", "parquet", "text", "arrow")
_OFFLINE = ("1", "true", "yes")


def task_manager(tasks: list[str], include_path: list[str]) -> Any:
    """A TaskManager over `include_path`, plus lm-eval's own tasks only when needed (~10 s)."""
    from lm_eval.tasks import TaskManager

    paths = [str(p) for p in include_path] or None
    tm = TaskManager(include_path=paths, include_defaults=False) if paths else None
    if tm is not None and all(t in tm.task_index for t in tasks):
        return tm
    return TaskManager(include_path=paths)


def _leaves(tm: Any, name: str, where: str) -> Iterator[tuple[str, dict]]:
    """(task name, YAML config) of every leaf task under a task/group/tag name."""
    from lm_eval.tasks._index import Kind

    entry = tm.task_index.get(name)
    if entry is None:
        raise ConfigError(
            f"{where}: unknown lm-eval task '{name}'; see `lm-eval ls tasks` "
            "or add a directory with its YAML to eval.lm_eval.include_path"
        )
    if entry.kind == Kind.TAG:
        for child in sorted(entry.tags):
            yield from _leaves(tm, child, where)
    elif entry.kind == Kind.GROUP:
        for child in (entry.cfg or {}).get("task", []):
            if isinstance(child, str):
                yield from _leaves(tm, child, where)
            elif isinstance(child, dict) and "dataset_path" in child:
                yield child["task"], child
            elif isinstance(child, dict):  # a registered task with overrides
                for leaf, cfg in _leaves(tm, child["task"], where):
                    yield leaf, {**cfg, **child}
    else:
        yield name, entry.cfg or {}


def _local_files(data_files: Any) -> list[str]:
    if isinstance(data_files, dict):
        return [f for v in data_files.values() for f in _local_files(v)]
    files = data_files if isinstance(data_files, list) else [data_files]
    return [str(f) for f in files if "://" not in str(f)]


def _cached(repo_id: str) -> bool:
    from datasets import config as ds_config
    from huggingface_hub import constants

    hub_dir = Path(constants.HF_HUB_CACHE) / f"datasets--{repo_id.replace('/', '--')}"
    ds_dir = Path(ds_config.HF_DATASETS_CACHE) / repo_id.replace("/", "___")
    return hub_dir.is_dir() or ds_dir.is_dir()


def _reachable(repo_id: str) -> str | None:
    """None when the data set can be loaded; else why not."""
    if _cached(repo_id):
        return None
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "0").lower() in _OFFLINE:
            return f"{var} is set"
    try:
        from huggingface_hub import HfApi

        HfApi().dataset_info(repo_id, timeout=hub.TIMEOUT_S)
    except Exception as e:  # offline, unknown id, gated without a token, ...
        return type(e).__name__
    return None


def preflight_tasks(tasks: list[str], include_path: list[str]) -> None:
    """Raise ConfigError (one line) when a task's data cannot be reached; no model, no data."""
    names = [t for t in tasks if t not in TINYWORLD_TASKS]
    if not names:
        return
    tm = task_manager(names, include_path)
    seen: set[str] = set()
    unreachable: list[str] = []  # every task that cannot run, named in one line
    for name in names:
        for leaf, cfg in _leaves(tm, name, "eval.lm_eval.tasks"):
            path = cfg.get("dataset_path")
            files = _local_files((cfg.get("dataset_kwargs") or {}).get("data_files") or [])
            missing = [f for f in files if not Path(f).expanduser().exists()]
            if missing:
                raise ConfigError(
                    f"eval.lm_eval.tasks: task '{leaf}' ({name}) reads "
                    f"{missing[0]}, which does not exist; lm-eval resolves "
                    "relative data_files from the cwd: use an absolute path"
                )
            if not path or files or path in _BUILDERS or Path(path).exists() or path in seen:
                continue
            seen.add(path)
            why = _reachable(path)
            if why:
                unreachable.append(f"'{leaf}' ({name}) needs '{path}'")
                last_why = why
    if unreachable:
        raise ConfigError(
            f"eval.lm_eval.tasks: {len(unreachable)} task(s) need data sets that are not in the "
            f"local cache and cannot be reached ({last_why}): {'; '.join(unreachable)}; run "
            "once online to cache them (HF_DATASETS_CACHE), or drop them from eval.lm_eval.tasks"
        )
    log.info("lm-eval preflight: %d task(s), %d hub data set(s) reachable", len(names), len(seen))


def _batch_size(value: str) -> int | str:
    return int(value) if str(value).isdigit() else str(value)


def _by_fewshot(tasks: list[str], fewshot: Any) -> dict[int | None, list[str]]:
    groups: dict[int | None, list[str]] = {}
    for t in tasks:
        groups.setdefault(fewshot.get(t) if t in fewshot else None, []).append(t)
    return groups


def parse_results(results: dict[str, dict]) -> dict[str, dict[str, float]]:
    """lm-eval's `results` ("acc,none": 0.8, "acc_stderr,none": ...) -> {task: {metric: v}}."""
    out: dict[str, dict[str, float]] = {}
    for task, row in results.items():
        for key, value in row.items():
            metric, _, flt = key.partition(",")
            if not flt or "_stderr" in metric or not isinstance(value, (int, float)):
                continue
            name = metric if flt == "none" else f"{metric}[{flt}]"
            out.setdefault(task, {})[name] = float(value)
    return out


def evaluate(
    model: Any,
    tok: Any,
    chat: bool,
    tasks: list[str],
    lcfg: LmEvalConf,
    tm: Any,
    samples_dir: Path | None = None,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Run `tasks` on a loaded model. Returns {task: {metric: value}}.

    Args:
        chat: apply the tokenizer's chat template (instruct-style models).
        lcfg: `eval.lm_eval` (batch size, few-shot per task, limit, ...).
        samples_dir: where per-example outputs are written (`<task>.jsonl`), or None.
    """
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(
        pretrained=model,
        tokenizer=tok,
        batch_size=_batch_size(lcfg.batch_size),
        max_batch_size=lcfg.max_batch_size,
        max_length=lcfg.max_length,
    )
    limit = lcfg.limit if lcfg.limit is None or lcfg.limit < 1 else int(lcfg.limit)
    out: dict[str, dict[str, float]] = {}
    for k, group in _by_fewshot(list(tasks), lcfg.num_fewshot).items():
        r = simple_evaluate(
            model=lm,
            tasks=group,
            num_fewshot=k,
            task_manager=tm,
            limit=limit,
            bootstrap_iters=lcfg.bootstrap_iters,
            log_samples=lcfg.log_samples,
            apply_chat_template=chat,
            fewshot_as_multiturn=chat,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
        out.update(parse_results(r["results"]))
        if samples_dir is not None and r.get("samples"):
            samples_dir.mkdir(parents=True, exist_ok=True)
            for task, rows in r["samples"].items():
                with open(samples_dir / f"{task}.jsonl", "w") as fh:
                    fh.writelines(json.dumps(s, default=str) + "\n" for s in rows)
    return out
