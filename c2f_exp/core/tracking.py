"""Experiment tracking: a metrics.jsonl per stage, plus the backends of `tracker.backends`.

Backends: wandb (tracking_wandb.py: offline unless configured, never a login prompt) and MLflow
(tracking_mlflow.py: a run per job, nested under one parent run per multirun); `tracker=many`
logs to both. Every backend gets the same things: the resolved config with secret-looking
values and URL credentials redacted, the job's swept values (top-level, numbers as numbers),
per-step series `<stage>/<key>` against `<stage>/step`, stage summaries, plots, and the
headline numbers as `final/<name>`. A stage reused from the cache replays its stored
metrics.jsonl rows (same keys, same steps), so every job of a sweep shows the curves of every
stage it used. A backend that fails mid-run is logged once and dropped: tracking never costs a
trained artifact.
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
NOT_METRICS = ("time", "stage", "step")  # bookkeeping fields of a metrics.jsonl row


def _config_value(v: Any) -> Any:
    """Scalars stay numbers (numeric axes in the dashboard); lists become their text."""
    return v if isinstance(v, (int, float, bool, str)) or v is None else str(v)


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def numeric(row: dict[str, Any]) -> dict[str, float | int | bool]:
    """The plottable values of a row (finite numbers; bookkeeping fields dropped)."""
    return {
        k: v
        for k, v in row.items()
        if k not in NOT_METRICS and isinstance(v, (int, float, bool)) and math.isfinite(v)
    }


@dataclass
class RunIdentity:
    """How one job shows up in trackers and manifest.json (built by c2f_exp.sweeping.identity)."""

    group: str
    job_type: str
    name: str
    multirun: bool
    swept: dict[str, Any] = field(default_factory=dict)  # short name -> value
    overrides: list[str] = field(default_factory=list)  # the job's command-line overrides
    numbers: dict[str, float] = field(default_factory=dict)  # e.g. lambda_first / lambda_last
    sweep_dir: str | None = None  # the multirun's directory (MLflow keeps its parent run there)
    sweep_id: str | None = None  # written once per multirun into sweep_dir (sweeping.sweep_id)

    def config_keys(self) -> dict[str, Any]:
        """Top-level config keys / params: swept values, then their numeric forms."""
        return {**{k: _config_value(v) for k, v in self.swept.items()}, **self.numbers}


def backends_of(tcfg: Any) -> list[str]:
    """`tracker.backends` as plain names ([] for none); a bare `backend: x` node also works."""
    names = tcfg.get("backends") if "backends" in tcfg else [tcfg.get("backend", "none")]
    return [str(b) for b in names or [] if str(b) != "none"]


def preflight(tcfg: Any, root_dir: str | None = None) -> None:
    """Cheap checks before any stage runs: a configured MLflow server answers (short timeout).
    Raises ConfigError naming `tracker.*` and the URL."""
    if "mlflow" in backends_of(tcfg):
        from c2f_exp.core import tracking_mlflow

        tracking_mlflow.preflight(tcfg, root_dir)


def _open(backend: str, tcfg: Any, run_dir: Path, config: dict, ident: RunIdentity) -> Any:
    if backend == "wandb":
        from c2f_exp.core.tracking_wandb import WandbRun

        return None if str(tcfg.mode) == "disabled" else WandbRun(tcfg, run_dir, config, ident)
    if backend == "mlflow":
        from c2f_exp.core.tracking_mlflow import MlflowRun

        return MlflowRun(tcfg, run_dir, config, ident)
    raise ValueError(f"tracker backend {backend!r} is not one of wandb, mlflow, none")


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
        self.backends = backends_of(tcfg)
        self._metrics_path: Path | None = None
        self._stage = ""
        safe = redact({**config, **ident.config_keys()})  # secrets never leave the process
        runs = [_open(b, tcfg, run_dir, safe, ident) for b in self.backends]
        self._runs = [r for r in runs if r is not None]

    @property
    def backend(self) -> str:
        """The first backend's name, or 'none' (older callers read one name)."""
        return self.backends[0] if self.backends else "none"

    def _each(self, method: str, *args: Any) -> None:
        for run in list(self._runs):
            try:
                getattr(run, method)(*args)
            except Exception as e:  # a dead server must not cost the stage being trained
                log.error("tracker %s failed (%s: %s); it logs nothing more", run.name,
                          type(e).__name__, e)  # fmt: skip
                self._runs.remove(run)

    def stage(self, name: str, stage_dir: Path) -> None:
        stage_dir.mkdir(parents=True, exist_ok=True)
        self._stage = name
        self._metrics_path = stage_dir / "metrics.jsonl"
        self._each("stage", name)

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Append to metrics.jsonl and log the numbers to each backend under `<stage>/`."""
        row = {k: _jsonable(v) for k, v in metrics.items()}
        now = time.time()
        if self._metrics_path is not None:
            rec = {"time": now, "stage": self._stage, "step": step, **row}
            with open(self._metrics_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
        self._each("log", self._stage, numeric(row), step, now)

    def replay(self, metrics_jsonl: Path) -> int:
        """Send a reused stage's stored rows to the backends: the same `<stage>/<key>` series
        on the same `<stage>/step` axis (and, in MLflow, the original timestamps), so a job
        that reused the Coarse Actor shows its curves. metrics.jsonl itself is not rewritten.
        Returns the number of rows replayed."""
        n = 0
        with open(metrics_jsonl) as fh:
            for line in fh:
                if not line.strip():
                    continue
                rec = json.loads(line)
                stage = rec.get("stage") or self._stage
                self._each("log", stage, numeric(rec), rec.get("step"), rec.get("time"))
                n += 1
        return n

    def summary(self, metrics: dict[str, Any]) -> None:
        """Stage-level values (`<stage>/<key>`): numbers, and text such as status/artifact."""
        keep = {k: _jsonable(v) for k, v in metrics.items()}
        keep = {k: v for k, v in keep.items() if isinstance(v, (int, float, bool, str))}
        self._each("summary", self._stage, keep)

    def images(self, paths: list[Path]) -> None:
        """PNG plots of the current stage (`<stage>/<file stem>`)."""
        if paths:
            self._each("images", self._stage, paths)

    def files(self, paths: list[Path]) -> None:
        """Files of the current stage kept with the run (e.g. eval's report.md)."""
        if paths:
            self._each("files", self._stage, paths)

    def final(self, headline: dict[str, Any], columns: list[str], rows: list[list]) -> None:
        """The run's headline numbers as `final/<name>`, and the eval table."""
        self._each("final", {k: _jsonable(v) for k, v in headline.items()}, columns, rows)

    def finish(self, exit_code: int = 0) -> None:
        self._each("finish", exit_code)
        self._runs = []
