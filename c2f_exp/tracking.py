"""Experiment tracking: wandb (offline unless configured) plus a local metrics.jsonl per stage.

wandb never prompts for a login: the mode comes from `tracker.mode` (default offline; `wandb sync`
uploads later). The logged config is resolved and has secret-looking values redacted.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
_SECRET = re.compile(r"(api[_-]?key|token|secret|password|passwd|auth)", re.I)
REDACTED = "***redacted***"


def redact(obj: Any) -> Any:
    """Copy of a config container with values under secret-looking keys replaced."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            secret = isinstance(k, str) and _SECRET.search(k) and not k.endswith("_env")
            out[k] = REDACTED if secret and v not in (None, "") else redact(v)
        return out
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class Tracker:
    """One run's tracker. `stage(name, dir)` selects where metrics.jsonl goes."""

    def __init__(self, tcfg: Any, run_dir: Path, config: dict, group: str, name: str):
        self.backend = tcfg.backend
        self._metrics_path: Path | None = None
        self._stage = ""
        self._run = None
        if self.backend == "wandb" and tcfg.mode != "disabled":
            import wandb

            self._run = wandb.init(
                project=tcfg.project,
                entity=tcfg.entity,
                group=tcfg.group or group,
                name=name,
                tags=list(tcfg.tags),
                config=redact(config),
                dir=str(run_dir),
                mode=tcfg.mode,
                settings=wandb.Settings(console="off", silent=True),
            )
            log.info("wandb %s run %s (dir %s)", tcfg.mode, self._run.id, run_dir)

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

    def finish(self, exit_code: int = 0) -> None:
        if self._run is not None:
            self._run.finish(exit_code=exit_code)
            self._run = None
