"""Experiment tracking: wandb (offline unless configured) plus a local metrics.jsonl per stage.

wandb never prompts for a login: the mode comes from `tracker.mode` (default offline; `wandb sync`
uploads later). The logged config is resolved and has secret-looking values and URL
credentials redacted, and wandb records neither the command line nor the program
(`_settings`): its offline run file and metadata would otherwise hold every override as typed.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from c2f_exp.core.secrets import REDACTED, redact  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


def _config_value(v: Any) -> Any:
    """Scalars stay numbers (numeric axes in the dashboard); lists become their text."""
    return v if isinstance(v, (int, float, bool, str)) or v is None else str(v)


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


@dataclass
class RunIdentity:
    """How one job shows up in wandb and manifest.json (built by c2f_exp.sweeping.identity)."""

    group: str
    job_type: str
    name: str
    multirun: bool
    swept: dict[str, Any] = field(default_factory=dict)  # short name -> value
    overrides: list[str] = field(default_factory=list)  # the job's command-line overrides


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


class Tracker:
    """One run's tracker. `stage(name, dir)` selects where metrics.jsonl goes."""

    def __init__(
        self,
        tcfg: Any,
        run_dir: Path,
        config: dict,
        group: str = "c2f_exp",
        name: str = "run",
        ident: RunIdentity | None = None,
    ):
        ident = ident or RunIdentity(group, group, name, False)
        self.backend = tcfg.backend
        self._metrics_path: Path | None = None
        self._stage = ""
        self._run = None
        if self.backend == "wandb" and tcfg.mode != "disabled":
            import wandb

            tags = [*tcfg.tags, *([f"sweep:{ident.job_type}"] if ident.multirun else [])]
            self._run = wandb.init(
                project=tcfg.project,
                entity=tcfg.entity,
                group=ident.group,  # one group per multirun: its jobs side by side
                job_type=ident.job_type,
                name=ident.name,  # e.g. lambda=0.5 (the job's swept values)
                tags=tags,
                # swept values as top-level keys: the dashboard groups and plots by them
                config=redact({**config, **{k: _config_value(v) for k, v in ident.swept.items()}}),
                dir=str(run_dir),
                mode=str(tcfg.mode),  # a plain str, not the TrackerMode enum member
                settings=_settings(wandb),
            )
            log.info(
                "wandb %s run %s (group %s, dir %s)", tcfg.mode, self._run.id, ident.group, run_dir
            )

    def stage(self, name: str, stage_dir: Path) -> None:
        stage_dir.mkdir(parents=True, exist_ok=True)
        self._stage = name
        self._metrics_path = stage_dir / "metrics.jsonl"
        if self._run is not None:  # each stage has its own x-axis: <stage>/step
            self._run.define_metric(f"{name}/step")
            self._run.define_metric(f"{name}/*", step_metric=f"{name}/step")

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Append to metrics.jsonl and log to wandb under `<stage>/`."""
        row = {k: _jsonable(v) for k, v in metrics.items()}
        if self._metrics_path is not None:
            rec = {"time": time.time(), "stage": self._stage, "step": step, **row}
            with open(self._metrics_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
        if self._run is not None:
            data = {
                f"{self._stage}/{k}": v
                for k, v in row.items()
                if isinstance(v, (int, float, bool))
            }
            if step is not None:
                data[f"{self._stage}/step"] = step
            self._run.log(data)

    def summary(self, metrics: dict[str, Any]) -> None:
        if self._run is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float, bool, str)):
                    self._run.summary[f"{self._stage}/{k}"] = v

    def images(self, paths: list[Path]) -> None:
        """Log PNG plots of the current stage as wandb images (`<stage>/<file stem>`)."""
        if self._run is None or not paths:
            return
        import wandb

        self._run.log({f"{self._stage}/{p.stem}": wandb.Image(str(p)) for p in paths})

    def final(self, headline: dict[str, Any], columns: list[str], rows: list[list]) -> None:
        """The run's headline numbers as `final/<name>` summary keys, and the eval table."""
        if self._run is None:
            return
        for k, v in headline.items():
            self._run.summary[f"final/{k}"] = _jsonable(v)
        if rows:
            import wandb

            self._run.log({"eval/table": wandb.Table(columns=columns, data=rows)})

    def finish(self, exit_code: int = 0) -> None:
        if self._run is not None:
            self._run.finish(exit_code=exit_code)
            self._run = None
