"""The MLflow backend of c2f_exp.core.tracking: a run per job, one parent run per multirun.

* Where: `tracker.mlflow.tracking_uri`; null: `$MLFLOW_TRACKING_URI` when set, else a local
  SQLite file `<paths.root_dir>/outputs/mlflow.db` (a SQLite store keeps new experiments'
  artifacts in `mlartifacts/` beside it, and is created under a file lock: parallel jobs race
  on its tables otherwise): `mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db`.
* Multirun: the jobs are children (`mlflow.parentRunId`, MLflow's nesting) of one parent run
  named after the multirun's group. The first job creates the parent under a file lock and
  writes its id into `<sweep dir>/mlflow_parent.json`; the other jobs (any launcher: basic,
  joblib, submitit) and a resumed multirun (same dir) find it there. The sweep's end marks the
  parent finished (SweepCallback).
* What: swept values (and lambda_first/_last) plus the flattened config as params; the resolved,
  redacted config as `config.yaml`; per-step metrics with their step; stage summaries and
  `final/*` as metrics (text as tags); stage plots and eval's report.md as artifacts.

mlflow is imported inside functions only (the `mlflow` extra).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from c2f_exp.core.artifacts import file_lock
from c2f_exp.core.errors import ConfigError
from c2f_exp.core.secrets import redact_text

log = logging.getLogger(__name__)
PARENT_FILE = "mlflow_parent.json"
_BAD_KEY = re.compile(r"[^\w./ -]")  # MLflow keys: alphanumerics, _ - . / and spaces
_FLUSH_ROWS, _FLUSH_SECONDS = 500, 5.0  # batch metric uploads; a live curve lags ~5 s at most


def _key(k: str) -> str:
    return _BAD_KEY.sub("_", k)


def tracking_uri(tcfg: Any, root_dir: str | None) -> tuple[str, str]:
    """(URI, the setting it came from): config, then $MLFLOW_TRACKING_URI, then local SQLite."""
    uri = (tcfg.get("mlflow") or {}).get("tracking_uri")
    if uri:
        return str(uri), "tracker.mlflow.tracking_uri"
    if os.environ.get("MLFLOW_TRACKING_URI"):
        src = "tracker.mlflow.tracking_uri (null, so $MLFLOW_TRACKING_URI)"
        return os.environ["MLFLOW_TRACKING_URI"], src
    db = (Path(root_dir or ".") / "outputs" / "mlflow.db").resolve()
    return f"sqlite:///{db}", "tracker.mlflow.tracking_uri (null: local SQLite)"


def _sqlite_path(uri: str) -> Path | None:
    """The database file of `sqlite:///rel.db` / `sqlite:////abs.db` (SQLAlchemy's forms)."""
    parts = urlsplit(uri)
    if parts.scheme != "sqlite" or len(parts.path) < 2:
        return None  # not SQLite, or in memory
    return Path(parts.path[1:])


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """For a local SQLite store: one process at a time creates and migrates the database (the
    parallel jobs of a joblib sweep otherwise race: 'duplicate column name')."""
    db = _sqlite_path(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(db.with_name(db.name + ".lock")):
        yield


def _timeout(tcfg: Any) -> float:
    return float((tcfg.get("mlflow") or {}).get("timeout_s") or 5.0)


def preflight(tcfg: Any, root_dir: str | None) -> None:
    """mlflow importable, and an http(s) tracking server answering /health within
    `tracker.mlflow.timeout_s`; raises ConfigError naming the setting and the URL."""
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError(
            "tracker.backends includes mlflow, but mlflow is not installed: "
            "pip install 'c2f_exp[mlflow]' (or use tracker=wandb / tracker=none)"
        )
    uri, source = tracking_uri(tcfg, root_dir)
    parts = urlsplit(uri)
    if _sqlite_path(uri) is not None:
        _sqlite_path(uri).parent.mkdir(parents=True, exist_ok=True)
    if parts.scheme not in ("http", "https"):
        return
    import urllib.request

    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{parts.port}" if parts.port else ""
    health = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    t = _timeout(tcfg)
    try:
        with urllib.request.urlopen(health, timeout=t) as r:  # http(s) only
            if r.status != 200:
                raise OSError(f"HTTP {r.status}")
    except Exception as e:
        reason = getattr(e, "reason", None) or e
        raise ConfigError(
            f"{source}: no MLflow tracking server answers at {redact_text(uri)} ({reason}; "
            f"waited {t:g}s); start one (mlflow server --host 127.0.0.1 --port 5000), fix the "
            "URI, or use tracker=wandb / tracker=none"
        ) from None


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _experiment(client: Any, name: str, local_root: Path | None) -> str:
    """The id of experiment `name`, created if missing (parallel jobs: whoever wins)."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        loc = (local_root / "mlartifacts").as_uri() if local_root else None  # not ./mlruns
        try:
            return client.create_experiment(name, artifact_location=loc)
        except MlflowException:  # another job created it first
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        raise ConfigError(
            f"tracker.mlflow.experiment: MLflow experiment {name!r} is deleted; restore it "
            "(mlflow experiments restore) or name another one"
        )
    return exp.experiment_id


def _parent_run(client: Any, exp_id: str, ident: Any, uri: str) -> str:
    """The multirun's parent run id: read from the sweep dir, or created there (first job)."""
    from mlflow.exceptions import MlflowException

    from c2f_exp.core.artifacts import write_json_atomic

    sweep_dir = Path(ident.sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    where, key = sweep_dir / PARENT_FILE, redact_text(uri)
    with file_lock(sweep_dir / f".{PARENT_FILE}.lock"):  # a sweep's jobs start together
        known = json.loads(where.read_text()) if where.is_file() else {}
        run_id = known.get(key, {}).get("run_id")
        if run_id:
            try:
                if client.get_run(run_id).info.experiment_id == exp_id:
                    client.update_run(run_id, status="RUNNING")  # a resumed multirun
                    return run_id
            except MlflowException:
                pass  # deleted on the server: a new parent
        tags = {"c2f.group": ident.group, "c2f.job_type": ident.job_type,
                "c2f.sweep_id": ident.sweep_id or "", "c2f.sweep_dir": str(sweep_dir)}  # fmt: skip
        run = client.create_run(exp_id, run_name=ident.group, tags=tags)
        known[key] = {"experiment_id": exp_id, "run_id": run.info.run_id}
        write_json_atomic(where, known)
        return run.info.run_id


def end_parent(tcfg: Any, root_dir: str | None, sweep_dir: Path, failed: bool) -> None:
    """Mark the multirun's parent run finished (or failed), if its jobs made one."""
    where = sweep_dir / PARENT_FILE
    if not where.is_file():
        return
    uri, _ = tracking_uri(tcfg, root_dir)
    entry = json.loads(where.read_text()).get(redact_text(uri))
    if entry:
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=uri).set_terminated(
            entry["run_id"], "FAILED" if failed else "FINISHED"
        )


class MlflowRun:
    """One job's MLflow run (MlflowClient only: no global active run)."""

    name = "mlflow"

    def __init__(self, tcfg: Any, run_dir: Path, config: dict, ident: Any):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        # a server that dies mid-run: fail after 2 quick retries, not MLflow's 7 with backoff
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        root = (config.get("paths") or {}).get("root_dir")
        uri, _ = tracking_uri(tcfg, root)
        name = (tcfg.get("mlflow") or {}).get("experiment") or tcfg.project
        db = _sqlite_path(uri)  # a new experiment's artifacts go beside it, not to ./mlruns
        local_root = db.resolve().parent if db is not None else None
        with _store_lock(uri):  # the client creates the store (SQLite: tables, migrations)
            self.client = MlflowClient(tracking_uri=uri)
            exp_id = _experiment(self.client, str(name), local_root)
        tags = {"c2f.group": ident.group, "c2f.job_type": ident.job_type, "c2f.run_dir":
                str(run_dir), "c2f.tags": ",".join(map(str, tcfg.tags))}  # fmt: skip
        if ident.multirun and ident.sweep_dir:
            tags["mlflow.parentRunId"] = _parent_run(self.client, exp_id, ident, uri)
        self.run_id = self.client.create_run(exp_id, run_name=ident.name, tags=tags).info.run_id
        params = {**_flat(config), **ident.config_keys()}  # swept values by their short names
        params = [Param(_key(k), str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(params), 100):  # MLflow's per-request limit
            self.client.log_batch(self.run_id, params=params[i : i + 100])
        self.client.log_dict(self.run_id, config, "config.yaml")
        self._pending: list[Any] = []
        self._flushed = time.time()
        self._steps: dict[str, int] = {}  # stage -> rows logged without a step
        self._series: set[str] = set()  # keys with a per-step history
        log.info("mlflow run %s (%s, parent %s)", self.run_id, redact_text(uri),
                 tags.get("mlflow.parentRunId"))  # fmt: skip

    def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:1000], self._pending[1000:]
            self.client.log_batch(self.run_id, metrics=batch)
        self._flushed = time.time()

    def _metrics(self, values: dict[str, Any], step: int, ts: float | None) -> None:
        from mlflow.entities import Metric

        ms = int((ts or time.time()) * 1000)
        self._pending += [Metric(_key(k), float(v), ms, step) for k, v in values.items()]
        if len(self._pending) >= _FLUSH_ROWS or time.time() - self._flushed > _FLUSH_SECONDS:
            self._flush()

    def _tags(self, values: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        tags = [RunTag(_key(k), str(v)[:8000]) for k, v in values.items()]
        for i in range(0, len(tags), 100):
            self.client.log_batch(self.run_id, tags=tags[i : i + 100])

    def stage(self, name: str) -> None:
        self._flush()

    def log(self, stage: str, data: dict[str, Any], step: int | None, ts: float | None) -> None:
        if step is None:  # rows without a step keep their order
            step = self._steps.get(stage, 0)
            self._steps[stage] = step + 1
        self._series.update(f"{stage}/{k}" for k in data)
        self._metrics({f"{stage}/{k}": v for k, v in data.items()}, step, ts)

    def summary(self, stage: str, metrics: dict[str, Any]) -> None:
        nums = {f"{stage}/{k}": v for k, v in metrics.items() if _is_number(v)}
        nums = {k: v for k, v in nums.items() if k not in self._series}  # keep histories clean
        self._metrics(nums, 0, None)
        self._tags({f"{stage}/{k}": v for k, v in metrics.items() if not _is_number(v)})
        self._flush()

    def images(self, stage: str, paths: list[Path]) -> None:
        self.files(stage, paths)

    def files(self, stage: str, paths: list[Path]) -> None:
        for p in paths:
            self.client.log_artifact(self.run_id, str(p), artifact_path=stage)

    def final(self, headline: dict[str, Any], columns: list[str], rows: list[list]) -> None:
        self._metrics({f"final/{k}": v for k, v in headline.items() if _is_number(v)}, 0, None)
        self._tags({f"final/{k}": v for k, v in headline.items() if not _is_number(v)})
        self._flush()
        if rows:
            table = {"columns": columns, "data": rows}
            self.client.log_dict(self.run_id, table, "eval/table.json")

    def finish(self, exit_code: int) -> None:
        self._flush()
        self.client.set_terminated(self.run_id, "FINISHED" if exit_code == 0 else "FAILED")


def _is_number(v: Any) -> bool:
    """Numbers and bools (MLflow metrics); text goes to tags."""
    return isinstance(v, (int, float))
