"""The wandb backend of c2f_exp.core.tracking (offline unless `tracker.mode` says otherwise).

wandb never prompts for a login: the mode comes from `tracker.mode` (default offline; `wandb sync`
uploads later). wandb records neither the command line nor the program (`_settings`): its
offline run file and metadata would otherwise hold every override as typed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _settings(wandb: Any) -> Any:
    """No console capture, and nothing about the process recorded: `x_disable_meta` drops the
    metadata (command-line args, program, host, env-derived fields) from the run files,
    `disable_code`/`save_code=False`/`disable_git` keep source and git state out."""
    return wandb.Settings(
        console="off",
        silent=True,
        x_disable_meta=True,
        x_disable_machine_info=True,
        disable_code=True,
        save_code=False,
        disable_git=True,
        program="c2f_exp",
    )


def tags(tcfg: Any, ident: Any) -> list[str]:
    """The configured tags, plus `sweep:<name>` for a named sweep or `multirun` for a -m grid."""
    extra = []
    if ident.multirun:
        extra = ["multirun"] if ident.job_type == "multirun" else [f"sweep:{ident.job_type}"]
    return [*(str(t) for t in tcfg.tags), *extra]


class WandbRun:
    """One wandb run: a group per multirun, swept values as top-level config keys."""

    name = "wandb"

    def __init__(self, tcfg: Any, run_dir: Path, config: dict, ident: Any):
        import wandb

        self._run = wandb.init(
            project=tcfg.project,
            entity=tcfg.entity,
            group=ident.group,  # one group per multirun: its jobs side by side
            job_type=ident.job_type,
            name=ident.name,  # e.g. lambda=0.5 (the job's swept values)
            tags=tags(tcfg, ident),
            config=config,  # already redacted, swept values (and lambda_first/_last) on top
            dir=str(run_dir),
            mode=str(tcfg.mode),  # a plain str, not the TrackerMode enum member
            settings=_settings(wandb),
        )
        self._defined: set[str] = set()
        log.info(
            "wandb %s run %s (group %s, dir %s)", tcfg.mode, self._run.id, ident.group, run_dir
        )

    def stage(self, name: str) -> None:
        if name not in self._defined:  # each stage has its own x-axis: <stage>/step
            self._defined.add(name)
            self._run.define_metric(f"{name}/step")
            self._run.define_metric(f"{name}/*", step_metric=f"{name}/step")

    def log(self, stage: str, data: dict[str, Any], step: int | None, ts: float | None) -> None:
        self.stage(stage)  # replayed rows may name a stage not started in this job
        row = {f"{stage}/{k}": v for k, v in data.items()}
        if step is not None:
            row[f"{stage}/step"] = step
        self._run.log(row)

    def summary(self, stage: str, metrics: dict[str, Any]) -> None:
        for k, v in metrics.items():
            self._run.summary[f"{stage}/{k}"] = v

    def images(self, stage: str, paths: list[Path]) -> None:
        import wandb

        self._run.log({f"{stage}/{p.stem}": wandb.Image(str(p)) for p in paths})

    def files(self, stage: str, paths: list[Path]) -> None:
        """Nothing: the eval report reaches wandb as a table (evaluation/report.log_media)."""

    def final(self, headline: dict[str, Any], columns: list[str], rows: list[list]) -> None:
        for k, v in headline.items():
            self._run.summary[f"final/{k}"] = v
        if rows:
            import wandb

            self._run.log({"eval/table": wandb.Table(columns=columns, data=rows)})

    def finish(self, exit_code: int) -> None:
        self._run.finish(exit_code=exit_code)
