"""Faults with real processes: `python -m c2f_exp.cache --gc` (issue 12.1), two builders of one
artifact and a SIGKILLed lock holder (12.5), and the kill-at-any-point harness (12.1, slow).

Kill harness: `_killing_main` runs `python -m c2f_exp` in a subprocess with one function
wrapped (env `C2F_KILL_AT=module:Class.attr:n`) so that its n-th call SIGKILLs the process —
a deterministic point inside a stage (pretraining step, reward training step, PPO rollout /
update, merge shard write, MT-Bench answering). The same command is then rerun; its artifacts
must equal an uninterrupted run's where the stage is deterministic, and no `.tmp-*`/`.work` may
remain. Upstream artifacts come from one baseline run (copied into each scenario's cache), so
every scenario kills exactly its own stage.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from c2f_exp.core import artifacts, cache
from tests.conftest import ROOT

PY = sys.executable


def _child(code: str, timeout: int = 120) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [PY, "-c", code],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.05)


# ---- gc -----------------------------------------------------------------------------------
def _cache_with_leftovers(root: Path) -> dict[str, Path]:
    stage = root / "cache" / "merge"
    done, killed = stage / "aaaa", stage / "bbbb"
    for d in (
        done,
        stage / ".tmp-aaaa-1-2",
        stage / ".old-cccc-3",
        stage / "aaaa.work",
        stage / "bbbb.work",
        stage / "dddd",
    ):
        d.mkdir(parents=True)
        (d / "f").write_text("x")
    (done / "DONE").write_text("t")
    (stage / "dddd" / "DONE").write_text("t")
    run = root / "outputs" / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"stages": [{"path": str(done)}]}))
    return {"stage": stage, "done": done, "killed_work": killed.with_name("bbbb.work")}


def test_gc_lists_and_removes_orphans_keeps_resumable_work(tmp_path):
    c = _cache_with_leftovers(tmp_path)
    args = ["--gc", "--cache-dir", str(tmp_path / "cache"), "--runs", str(tmp_path / "outputs")]
    dry = subprocess.run(
        [PY, "-m", "c2f_exp.cache", *args, "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry.returncode == 0, dry.stderr
    assert "would remove" in dry.stdout and (c["stage"] / ".tmp-aaaa-1-2").exists()
    proc = subprocess.run(
        [PY, "-m", "c2f_exp.cache", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    left = sorted(p.name for p in c["stage"].iterdir())
    # temp dirs and the finished artifact's work dir are gone; a killed build's work dir (its
    # resume checkpoints) and every artifact stay without --work / --unused
    assert left == ["aaaa", "bbbb.work", "dddd"], left
    assert proc.stdout.count("removed ") == 3


def test_gc_work_and_unused_flags(tmp_path):
    c = _cache_with_leftovers(tmp_path)
    gone = cache.gc(tmp_path / "cache", [tmp_path / "outputs"], work=True, unused=True)
    assert {p.name for _, p in gone} == {
        ".tmp-aaaa-1-2",
        ".old-cccc-3",
        "aaaa.work",
        "bbbb.work",
        "dddd",
    }
    assert c["done"].is_dir()  # named by a manifest: kept


def test_gc_skips_what_a_live_builder_holds(tmp_path):
    stage = tmp_path / "cache" / "merge"
    (stage / ".tmp-eeee-1-2").mkdir(parents=True)
    holder = _child(
        "import time, pathlib; from c2f_exp.core import artifacts\n"
        f"art = pathlib.Path({str(stage / 'eeee')!r})\n"
        "with artifacts.claim(art):\n"
        f"    pathlib.Path({str(tmp_path / 'held')!r}).touch(); time.sleep(60)\n"
    )
    try:
        _wait_for(tmp_path / "held", holder)
        assert cache.gc(tmp_path / "cache") == []
        assert (stage / ".tmp-eeee-1-2").exists()
    finally:
        holder.kill()
        holder.wait()
    assert [p.name for _, p in cache.gc(tmp_path / "cache")] == [".tmp-eeee-1-2"]


# ---- concurrency with real processes --------------------------------------------------------
BUILDER = """
import json, pathlib, sys, time
from omegaconf import OmegaConf
from c2f_exp import pipeline
from c2f_exp.core.tracking import Tracker
root = pathlib.Path(sys.argv[1])
class Slow:
    name = "slow"
    def config_subtree(self, cfg): return {}
    def run(self, ctx, out):
        with open(root / "builds.log", "a") as fh: fh.write("build\\n")
        time.sleep(1.5)
        (out / "weights.bin").write_bytes(b"w" * 1000)
        return {"x": 1}
tracker = Tracker(OmegaConf.create({"backend": "none", "mode": "disabled"}), root, {})
cfg = OmegaConf.create({"force": False})
e = pipeline._run_stage(Slow(), cfg, root / sys.argv[2], root / "cache" / "slow" / "k", "k",
                        tracker, {})
print(json.dumps(e["status"]))
"""


def test_two_processes_building_one_artifact_build_it_once(tmp_path):
    procs = [
        subprocess.Popen(
            [PY, "-c", BUILDER, str(tmp_path), f"run{i}"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    statuses = sorted(json.loads(o[0].strip().splitlines()[-1]) for o in outs)
    assert statuses == ["done", "reused"]
    assert (tmp_path / "builds.log").read_text().count("build") == 1


def test_sigkilled_lock_holder_does_not_block_and_its_temp_dir_is_cleared(tmp_path):
    art = tmp_path / "cache" / "merge" / "ffff"
    holder = _child(
        "import time, pathlib; from c2f_exp.core import artifacts\n"
        f"art = pathlib.Path({str(art)!r})\n"
        "with artifacts.claim(art), artifacts.atomic_dir(art) as tmp:\n"
        "    (tmp / 'half.bin').write_bytes(b'x' * 100)\n"
        f"    pathlib.Path({str(tmp_path / 'held')!r}).touch(); time.sleep(60)\n"
    )
    _wait_for(tmp_path / "held", holder)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert holder.returncode == -signal.SIGKILL
    assert list(art.parent.glob(".tmp-ffff-*"))  # the killed build's half-written dir
    t0 = time.monotonic()
    with artifacts.claim(art):  # flock died with the process: we get it at once
        assert time.monotonic() - t0 < 30  # generous: only "not blocked forever"
        assert artifacts.clear_orphans(art)
    assert not list(art.parent.glob(".tmp-ffff-*")) and not artifacts.is_complete(art)


# ---- kill at any point (slow) ---------------------------------------------------------------
KILLER = """
import importlib, os, runpy, signal, sys
mod, attr, n = os.environ["C2F_KILL_AT"].split(":")
obj = importlib.import_module(mod)
*owner, name = attr.split(".")
for part in owner:
    obj = getattr(obj, part)
real, calls = getattr(obj, name), [0]
def wrapped(*a, **k):
    calls[0] += 1
    if calls[0] == int(n):
        os.kill(os.getpid(), getattr(signal, os.environ.get("C2F_KILL_SIG", "SIGKILL")))
    return real(*a, **k)
setattr(obj, name, wrapped)
sys.argv = ["c2f_exp", *sys.argv[1:]]
runpy.run_module("c2f_exp", run_name="__main__", alter_sys=True)
"""
MICRO = ["debug=micro", "tracker=none"]
# stage -> (kill point, the stages already in the scenario's cache)
POINTS = {
    "prepare": ("transformers:Trainer.training_step:5", []),
    "reward": ("transformers:Trainer.training_step:2", ["prepare"]),
    "coarse_rollout": ("c2f_exp.coarse.trainer:CoarseTrainer.run_step:3", ["prepare", "reward"]),
    "coarse_update": ("c2f_exp.coarse.trainer:CoarseTrainer.update:3", ["prepare", "reward"]),
    "merge": ("c2f_exp.merge.io:ShardWriter.write:4", ["prepare", "reward", "coarse"]),
    "eval": ("c2f_exp.evaluation.mt_bench:generate:2", ["prepare", "reward", "coarse", "merge"]),
}


def _cli(args: list[str], tmp: Path, run: str, kill_at: str | None = None, sig: str = "SIGKILL"):
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT), "C2F_KILL_SIG": sig}
    if kill_at:
        env["C2F_KILL_AT"] = kill_at
    cmd = ["-c", KILLER] if kill_at else ["-m", "c2f_exp"]
    full = [PY, *cmd, f"hydra.run.dir={tmp}/{run}", f"paths.cache_dir={tmp}/cache", *args]
    t0 = time.time()
    proc = subprocess.run(full, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    return proc, time.time() - t0


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("baseline")
    proc, _ = _cli(MICRO, tmp, "run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp


def _stage_entry(tmp: Path, run: str, stage: str) -> dict:
    m = json.loads((tmp / run / "manifest.json").read_text())
    return next(s for s in m["stages"] if s["stage"] == stage)


@pytest.mark.slow
@pytest.mark.parametrize("point", list(POINTS))
def test_kill_at_any_point_then_rerun_loses_nothing(point, baseline, tmp_path):
    kill_at, cached = POINTS[point]
    stage = point.split("_")[0]
    for s in cached:  # the baseline's upstream artifacts: this scenario kills only `stage`
        src = Path(_stage_entry(baseline, "run", s)["path"])
        shutil.copytree(src, tmp_path / "cache" / s / src.name)
    killed, t_kill = _cli(MICRO, tmp_path, "killed", kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    rerun, t_rerun = _cli(MICRO, tmp_path, "rerun")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    left = [p for p in (tmp_path / "cache").glob("*/*") if p.name.startswith(".tmp-")]
    left += list((tmp_path / "cache").glob("*/*.work"))
    assert not left, left
    mine, ref = _stage_entry(tmp_path, "rerun", stage), _stage_entry(baseline, "run", stage)
    assert mine["status"] == "done" and mine["config_hash"] == ref["config_hash"]
    resumed = "resum" in (rerun.stdout + rerun.stderr).lower()
    print(
        f"FAULT {point}: killed after {t_kill:.1f}s, rerun {t_rerun:.1f}s, "
        f"stage {mine['seconds']:.1f}s (uninterrupted {ref['seconds']:.1f}s), "
        f"resumed={resumed}"
    )
    if stage in ("prepare", "reward", "coarse"):  # they checkpoint (debug=micro: save_steps)
        assert resumed, (rerun.stdout + rerun.stderr)[-3000:]
    if stage == "merge":  # deterministic: byte-identical weights
        a, b = Path(mine["path"]), Path(ref["path"])
        assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    if stage == "eval":  # greedy decoding, gold judge: identical scores
        assert mine["metrics"] == ref["metrics"]


@pytest.mark.parametrize(("sig", "status"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_sigterm_and_ctrl_c_take_the_error_path(sig, status, tmp_path):
    """Issue 25.8: SIGTERM (SLURM's time limit) exited 143 leaving manifest.json `running`,
    Ctrl-C printed a KeyboardInterrupt traceback. Now both unwind like an exception: manifest
    `failed`, lock free, no temp dir, one `error:` line, exit 128 + signal number."""
    point = "transformers:Trainer.training_step:2"  # inside the prepare stage's pretraining
    proc, _ = _cli([*MICRO, "stages=[prepare]"], tmp_path, "run", point, sig)
    assert proc.returncode == status, proc.stderr[-3000:]
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and f"interrupted by {sig}" in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"] == f"Interrupted: stopped by {sig}"
    stage = tmp_path / "cache" / "prepare"
    assert not list(stage.glob(".tmp-*")) and not list(stage.glob("*/DONE"))
    locks = list(stage.glob("*.lock"))
    assert locks
    for lock in locks:  # released: we get it at once
        with open(lock, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
