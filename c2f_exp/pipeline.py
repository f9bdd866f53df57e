"""Run `cfg.stages` in order with artifact reuse and write manifest.json (docs/method.md §4-5)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from c2f_exp import sweeping
from c2f_exp.analysis import summary
from c2f_exp.config import C2FConfig, validate
from c2f_exp.core import artifacts, cache, layout, tracking
from c2f_exp.core.secrets import redact_text
from c2f_exp.core.tracking import RunIdentity, Tracker
from c2f_exp.core.versions import stack_versions
from c2f_exp.stages import Stage, StageContext

log = logging.getLogger(__name__)
RESULT = layout.RESULT


def _cfg(node: Any) -> Any:
    if not isinstance(node, DictConfig):
        return node
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)  # choices as plain str


def run_pipeline(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Validate, preflight every requested stage, then run or reuse each one.

    manifest.json is written from the start (`status: running`) and after every stage, and
    says `failed` with the error's first line when the run stops on one, so
    `python -m c2f_exp.compare` can show every job of a sweep, failed ones included.
    """
    ident = sweeping.identity(cfg, run_dir)
    manifest: dict[str, Any] = {"experiment": cfg.experiment_name, "status": "running"}
    manifest["sweep"] = {"name": cfg.sweep.name, "group": ident.group, "swept": ident.swept}
    manifest.update(overrides=ident.overrides, stages=[])
    manifest["stack"] = stack_versions()  # results depend on them (constraints.txt pins them)
    _write_manifest(run_dir, manifest)
    try:
        _run_stages(cfg, run_dir, ident, manifest)
        manifest["status"] = "done"
    except BaseException as e:
        first = redact_text((str(e).strip().splitlines() or [""])[0])
        manifest.update(status="failed", error=f"{type(e).__name__}: {first}".rstrip(": "))
        raise
    finally:
        _write_manifest(run_dir, manifest)
    return manifest


def _write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    if _rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        artifacts.write_json_atomic(run_dir / "manifest.json", manifest)


def registry() -> dict[str, Stage]:
    """name -> Stage, one per stage package (imported here, when a run needs them)."""
    from c2f_exp.coarse.stage import CoarseStage
    from c2f_exp.evaluation.stage import EvalStage
    from c2f_exp.merge.stage import MergeStage
    from c2f_exp.prepare.stage import PrepareStage
    from c2f_exp.reward.stage import RewardStage

    return {
        s.name: s
        for s in (PrepareStage(), RewardStage(), CoarseStage(), MergeStage(), EvalStage())
    }


def _run_stages(
    cfg: DictConfig, run_dir: Path, ident: RunIdentity, manifest: dict[str, Any]
) -> None:
    stages = registry()
    conf = validate(cfg, tuple(stages))  # the typed config every stage gets
    for name in conf.stages:  # all cheap checks first: fail before any expensive work
        stages[name].preflight(conf)
    if _rank() == 0:  # an unreachable tracking server: one line, before any stage runs
        tracking.preflight(cfg.tracker, str(cfg.paths.root_dir))
    cache_dir = artifacts.check_writable(Path(cfg.paths.cache_dir), "paths.cache_dir")
    tcfg = cfg.tracker if _rank() == 0 else OmegaConf.create({"backends": []})
    tracker = Tracker(tcfg, run_dir, _cfg(cfg), ident=ident)
    exit_code = 1
    try:
        upstream: dict[str, dict[str, Any]] = {}
        for name in conf.stages:
            stage = stages[name]
            inputs = {k: v["config_hash"] for k, v in upstream.items()}
            key = artifacts.config_hash(
                {"stage": name, "config": stage.config_subtree(conf), "inputs": inputs}
            )
            entry = _run_stage(
                stage, conf, run_dir, cache_dir / name / key, key, tracker, upstream
            )
            upstream[name] = entry
            manifest["stages"].append(entry)
            _write_manifest(run_dir, manifest)
        tracker.final(summary.headline(manifest), *summary.eval_table(manifest))
        exit_code = 0
    finally:
        tracker.finish(exit_code)


def _run_stage(
    stage: Any,
    cfg: C2FConfig,
    run_dir: Path,
    art: Path,
    key: str,
    tracker: Tracker,
    upstream: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    if _rank() != 0:  # no tracker.stage(): followers log nothing
        return _run_follower(stage, cfg, run_dir, art, key, tracker, upstream)
    stage_dir = run_dir / stage.name
    tracker.stage(stage.name, stage_dir)
    t0 = time.time()
    with artifacts.claim(art):  # parallel jobs wanting the same artifact wait, then reuse it
        artifacts.clear_orphans(art)  # temp dirs of killed builders (we hold the lock)
        result = None if cfg.force else _verified_result(stage.name, art)
        if result is not None:
            status = "reused"
            if (art / "metrics.jsonl").is_file():
                shutil.copy(art / "metrics.jsonl", stage_dir / "metrics.jsonl")
            if hasattr(stage, "publish"):  # copy run-facing files (e.g. eval's report)
                stage.publish(art, stage_dir)
            log.info("stage %s: reused %s", stage.name, art)
        else:
            status = "done"
            log.info("stage %s: building %s", stage.name, art)
            ctx = StageContext(
                cfg, run_dir, stage_dir, _work_dir(art), tracker, dict(upstream), final_dir=art
            )
            result = _build(stage, ctx, art, t0)
    marks = {"status": status, "artifact": key, "path": str(art)}
    if status == "reused" and (art / "metrics.jsonl").is_file():  # its curves, too (the copy)
        marks["replayed_rows"] = tracker.replay(stage_dir / "metrics.jsonl")
    tracker.summary({**result["metrics"], **marks})
    tracker.images(sorted(art.glob("*.png")))  # length_trace, overoptimization, eval plots
    tracker.files([*(p for p in [art / "report.md"] if p.is_file()), *art.glob("plots/*.png")])
    seconds = round(time.time() - t0, 2) if status == "reused" else result["seconds"]
    return _entry(stage.name, status, art, key, seconds, result["metrics"])


def _work_dir(art: Path) -> Path:
    work = art.with_name(art.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    return work


def _verified_result(stage: str, art: Path) -> dict[str, Any] | None:
    """A complete artifact's result.json after checking its files (cache.verify), else None:
    a damaged artifact is rebuilt (replaced atomically when the rebuild completes)."""
    if not artifacts.is_complete(art):
        return None
    try:
        result = cache.verify_result(art, _read_result(art))
    except (cache.CorruptArtifact, ValueError, OSError) as e:
        log.warning("stage %s: %s; rebuilding it", stage, e)
        return None
    return result


def _build(stage: Any, ctx: StageContext, art: Path, t0: float) -> dict[str, Any]:
    """Run the stage into a temp dir renamed to `art` when complete, with its fingerprint.

    A disk-full / permission failure becomes a named error (the previous artifact, if any, is
    untouched: it is only replaced by the final rename). The work dir is kept for resume
    when the stage checkpoints into it, and removed otherwise."""
    try:
        with artifacts.atomic_dir(art) as tmp:
            metrics = stage.run(ctx, tmp)
            result = {"metrics": metrics, "seconds": round(time.time() - t0, 2)}
            if (ctx.stage_dir / "metrics.jsonl").is_file():
                shutil.copy(ctx.stage_dir / "metrics.jsonl", tmp / "metrics.jsonl")
            result["files"] = cache.fingerprint(tmp)  # checked before every reuse
            result["version"] = artifacts.package_version()
            artifacts.write_json_atomic(tmp / RESULT, result)
    except BaseException as e:
        if not getattr(stage, "checkpoints", True) or not _has_files(ctx.work_dir):
            shutil.rmtree(ctx.work_dir, ignore_errors=True)  # nothing to resume from
        err = artifacts.write_error(e, art)  # disk full / denied, also as torch's RuntimeError
        if err is not None:
            raise err from None
        raise
    shutil.rmtree(ctx.work_dir, ignore_errors=True)
    return result


def _has_files(d: Path) -> bool:
    return d.is_dir() and any(d.iterdir())


def _entry(name: str, status: str, art: Path, key: str, seconds: float, metrics: dict) -> dict:
    """One manifest.json entry (docs/method.md §5)."""
    return {
        "stage": name,
        "status": status,
        "path": str(art),
        "config_hash": key,
        "seconds": seconds,
        "metrics": metrics,
        "models": artifacts.model_dirs(name, art),  # role -> model dir, e.g. coarse: <art>/actor
    }


def _rank() -> int:
    """This process's rank under `accelerate launch` / torchrun (0 otherwise)."""
    return int(os.environ.get("RANK", "0"))


def _run_follower(
    stage: Any,
    cfg: C2FConfig,
    run_dir: Path,
    art: Path,
    key: str,
    tracker: Tracker,
    upstream: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Rank > 0 under `accelerate launch`: run the stage beside rank 0, write nothing.

    Distributed stages need every rank in their collectives, so followers run them too: no
    claim lock (rank 0 holds it and waits for us), the same work dir (checkpoints written by
    all ranks resume together), and a throwaway artifact dir (rank 0 owns the artifact).
    """
    t0 = time.time()
    if artifacts.is_complete(art) and not cfg.force:
        result, status = _read_result(art), "reused"
    else:
        work = art.with_name(art.name + ".work")
        work.mkdir(parents=True, exist_ok=True)
        ctx = StageContext(cfg, run_dir, run_dir / stage.name, work, tracker, dict(upstream))
        with tempfile.TemporaryDirectory(prefix=f"{stage.name}-rank{_rank()}-") as tmp:
            result, status = {"metrics": stage.run(ctx, Path(tmp))}, "done"
        while not artifacts.is_complete(art):  # rank 0 renames it into place: later stages read it
            time.sleep(0.5)
    return _entry(stage.name, status, art, key, round(time.time() - t0, 2), result["metrics"])


def _read_result(art: Path) -> dict[str, Any]:
    import json

    return json.loads((art / RESULT).read_text())
