"""Sweeps: who a job is (tracker group, run name, swept values) and whole-multirun checks.

A multirun (`python -m c2f_exp -m sweep=<name>`, or an ad-hoc grid `-m key=a,b`) is one tracker
group, `<sweep name>-<id>` (`multirun-<id>` for an ad-hoc grid), where the id is written once
into the sweep dir (`sweep_id`, first writer wins) and read by every job: the same group under
any launcher (basic, joblib, submitit), for any `hydra.sweep.dir`, and when the multirun is run
again in the same dir. Each job's run name is built from its swept overrides (`lambda=0.5`,
`rate=0.3,kappa=2`); the swept values are top-level config keys (numbers stay numbers; a per-layer
λ list also gives numeric `lambda_first`/`lambda_last`), so the dashboard's grouping and
parallel-coordinates panels work on them. `SweepCallback` (registered in conf/config.yaml)
composes and validates every job of a grid sweep and checks the tracker before any job starts,
and writes `compare.md/.csv` + plots into the sweep directory when the sweep ends.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from c2f_exp.analysis.summary import ends
from c2f_exp.core.overrides import ALIASES, short_name  # noqa: F401  (re-exported)
from c2f_exp.core.overrides import parse as _parse
from c2f_exp.core.secrets import redact_text, scrub_yaml
from c2f_exp.core.tracking import RunIdentity

log = logging.getLogger(__name__)
SWEEP_ID = "sweep_id"  # <sweep dir>/sweep_id: the multirun's id, written once
AD_HOC = "multirun"  # group prefix and job_type of a `-m key=a,b` grid without sweep=<name>
PER_LAYER = ("merger.coefficient",)  # may be a list (one value per layer): also _first/_last


def sweep_id(sweep_dir: Path) -> str:
    """The multirun's id (`<date>-<time>-<6 hex>`), created by whoever asks first.

    Written to a temp file and hard-linked into place: the link fails if the file exists, so
    concurrent jobs (joblib, submitit) agree on the first writer's id, and a multirun run again
    in the same dir keeps it."""
    path = sweep_dir / SWEEP_ID
    if not path.is_file():
        sweep_dir.mkdir(parents=True, exist_ok=True)
        new = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        tmp = sweep_dir / f".{SWEEP_ID}.{os.getpid()}.{secrets.token_hex(4)}"
        tmp.write_text(new + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another job was first: use its id
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text().strip()


def numbers(cfg: DictConfig, swept: dict[str, Any], parsed: dict[str, Any]) -> dict[str, float]:
    """Numeric forms of list-valued settings: the per-layer keys (from the resolved config, so
    `sweep.vars` interpolations count) and every swept list of numbers."""
    out: dict[str, float] = {}
    for key in PER_LAYER:
        try:
            value = OmegaConf.select(cfg, key, default=None)
        except Exception:  # a broken interpolation: validate() names it, not the identity
            value = None
        out.update(ends(short_name(key), value))
    for name, value in parsed.items():
        if isinstance(value, list):
            out.update(ends(name, value))
    return {k: v for k, v in out.items() if k not in swept}


def swept_keys(hc: Any) -> list[str]:
    """Keys a multirun sweeps: the sweeper's `params` plus sweep-form command-line overrides.

    Args:
        hc: the job's Hydra config (`HydraConfig.get()`); the master's command line is read
            from `<sweep dir>/multirun.yaml`, which Hydra's sweepers write before any job runs.
    """
    keys = [str(k) for k in (OmegaConf.select(hc, "sweeper.params") or {})]
    master = Path(str(hc.sweep.dir)) / "multirun.yaml"
    if master.is_file():
        cli = _parse(list(OmegaConf.load(master).hydra.overrides.task))
        fixed = {o.key_or_group for o in cli if not o.is_sweep_override()}
        keys = [k for k in keys if k not in fixed]  # `merger.filter=none` narrows a sweep's grid
        keys += [o.key_or_group for o in cli if o.is_sweep_override()]
    return list(dict.fromkeys(keys))


def _value(o: Any) -> Any:
    """A parsed override's value as a JSON-able scalar (lists and group options: a string)."""
    v = o.value()
    if isinstance(v, (int, float, bool)) or v is None:
        return v
    return o.get_value_element_as_str()


def identity(cfg: DictConfig, run_dir: Path) -> RunIdentity:
    """This job's tracker group/name/job_type and swept values (Hydra's runtime config)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get() if HydraConfig.initialized() else None  # None: called from Python
    sweep_name = cfg.sweep.name
    overrides = list(hc.overrides.task) if hc is not None else []
    recorded = [redact_text(o) for o in overrides]  # manifest.json: no secrets, no URL creds
    if hc is None or hc.mode != RunMode.MULTIRUN:
        name = f"{cfg.experiment_name}-{run_dir.name}"
        group = cfg.tracker.group or cfg.experiment_name
        job_type = sweep_name or cfg.experiment_name
        return RunIdentity(group, job_type, name, False, {}, recorded, numbers(cfg, {}, {}))
    sweep_dir = Path(str(hc.sweep.dir))
    sid = sweep_id(sweep_dir)  # one id per multirun, whatever the dir is called
    job_type = sweep_name or AD_HOC  # an ad-hoc grid is not "the experiment's sweep"
    group = cfg.tracker.group or f"{job_type}-{sid}"
    keys = {k.lstrip("+~") for k in swept_keys(hc)}
    chosen = [o for o in _parse(overrides) if o.key_or_group in keys]  # no +/~ in key_or_group
    swept = {short_name(o.key_or_group): _value(o) for o in chosen}
    parsed = {short_name(o.key_or_group): o.value() for o in chosen}
    name = ",".join(f"{k}={v}" for k, v in swept.items()) or f"job{hc.job.num}"
    extra = numbers(cfg, swept, parsed)
    return RunIdentity(group, job_type, name, True, swept, recorded, extra, str(sweep_dir), sid)


def objective_value(cfg: DictConfig, manifest: dict[str, Any] | None) -> float | None:
    """`sweep.objective` (`<stage>/<metric>`) read from the manifest; NaN if it is missing."""
    if cfg.sweep.objective is None:
        return None
    stage, key = str(cfg.sweep.objective).split("/", 1)
    for s in (manifest or {}).get("stages", []):
        if s["stage"] == stage and isinstance(s["metrics"].get(key), (int, float)):
            return float(s["metrics"][key])
    log.warning("sweep.objective %s not found in this job's manifest", cfg.sweep.objective)
    return math.nan


def grid_jobs(config: DictConfig) -> list[list[str]] | None:
    """Every job's overrides of a grid multirun (Hydra's BasicSweeper), or None for others."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    if not str(OmegaConf.select(config, "hydra.sweeper._target_")).endswith("BasicSweeper"):
        return None  # optuna & co. draw jobs as they go: each job validates itself
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    args = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    return BasicSweeper.split_arguments(_parse(args), None)[0]


def validate_jobs(config: DictConfig) -> int:
    """Compose and validate every job of a grid sweep; raise SweepError on the first bad one."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import read_write

    from c2f_exp.config import STAGE_ORDER, validate

    jobs = grid_jobs(config)
    if jobs is None:
        return 0
    loader, hydra_cfg = GlobalHydra.instance().config_loader(), HydraConfig.instance()
    saved = hydra_cfg.cfg
    try:
        for i, overrides in enumerate(jobs):
            try:
                job = loader.load_sweep_config(config, list(overrides))
                # `${hydra:runtime.*}` (conf/paths) resolves as in the job Hydra will start
                with read_write(job.hydra.runtime):
                    job.hydra.runtime.output_dir = f"{job.hydra.sweep.dir}/{i}"
                hydra_cfg.set_config(job)
                validate(job, STAGE_ORDER)
            except Exception as e:  # composition errors (typos) and our named value errors
                from c2f_exp.cli_errors import one_line

                msg = one_line(e) or (str(e).strip() or type(e).__name__).splitlines()[0]
                job_text = redact_text(" ".join(overrides))
                raise SweepError(f"sweep job {i} ({job_text}): {msg}") from e
    finally:
        hydra_cfg.cfg = saved
    return len(jobs)


class SweepError(Exception):
    """A job of the sweep would fail validation: nothing has run yet."""


class SweepCallback(Callback):
    """Hydra callback: validate a grid sweep up front; compare its jobs when it ends."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from c2f_exp.core import tracking
        from c2f_exp.core.errors import C2FError

        t0 = time.time()
        try:
            n = validate_jobs(config)
            tracking.preflight(config.tracker, _root_dir(config))  # a dead server: no job runs
        except (SweepError, C2FError) as e:
            log.error("%s", e)
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        sid = sweep_id(Path(str(config.hydra.sweep.dir)))  # before any job: theirs to read
        if n:
            log.info("sweep %s: %d jobs composed and validated in %.1fs", sid, n, time.time() - t0)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from c2f_exp.analysis import compare

        sweep_dir = Path(str(config.hydra.sweep.dir))
        scrub_yaml(sweep_dir / "multirun.yaml")  # each job scrubs it too; this catches the rest
        try:
            table = compare.compare([sweep_dir], sweep_dir)
        except Exception as e:  # the jobs' own results stay; only the summary is missing
            log.error("sweep: could not write the comparison (%s: %s)", type(e).__name__, e)
            _end_mlflow_parent(config, sweep_dir, False)
            return
        failed = [r for r in table if r["status"] == "failed"]
        _end_mlflow_parent(config, sweep_dir, bool(failed))
        log.info(
            "sweep: %d jobs, %d failed; comparison: %s",
            len(table),
            len(failed),
            sweep_dir / "compare.md",
        )
        if failed:
            for r in failed:
                print(f"error: sweep job {r['job']} failed: {r.get('error', '')}", file=sys.stderr)
            raise SystemExit(2)


def _root_dir(config: DictConfig) -> str | None:
    """paths.root_dir of the master's config (None where it cannot be resolved here)."""
    try:
        return str(OmegaConf.select(config, "paths.root_dir"))
    except Exception:  # ${hydra:...} outside a job
        return None


def _end_mlflow_parent(config: DictConfig, sweep_dir: Path, failed: bool) -> None:
    from c2f_exp.core.tracking import backends_of

    if "mlflow" not in backends_of(config.tracker):
        return
    from c2f_exp.core import tracking_mlflow

    try:
        tracking_mlflow.end_parent(config.tracker, _root_dir(config), sweep_dir, failed)
    except Exception as e:  # the jobs' runs are complete; only the parent's status is stale
        log.warning("sweep: could not end the MLflow parent run (%s: %s)", type(e).__name__, e)
