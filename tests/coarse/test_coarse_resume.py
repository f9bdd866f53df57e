"""A coarse run killed with SIGKILL and started again with the same command resumes and finishes.

The run is the coarse stage driven in a subprocess (tests/coarse/test_coarse.py's driver),
slowed per step so the kill lands after the first checkpoint and before the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from tests.helpers import ROOT
from tests.helpers.coarse import build_micro_world, coarse_cfg, read_trace

STEPS, EVERY = 6, 2


def _cmd(tmp: Path, run: str = "run") -> list[str]:
    return [
        sys.executable,
        str(ROOT / "tests" / "coarse" / "test_coarse.py"),
        str(tmp / "cfg.yaml"),
        str(tmp / "up.json"),
        str(tmp / "out"),
        str(tmp / "work"),
        str(tmp / run),
        "0.4",
    ]


def _rows_logged(tmp: Path, run: str = "run") -> list[dict]:
    path = tmp / run / "coarse" / "metrics.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
    return [r for r in rows if "limit" in r]


def _steps_logged(tmp: Path, run: str = "run") -> list[int]:
    return [r["step"] for r in _rows_logged(tmp, run)]


def test_sigkill_then_same_command_resumes(tmp_path):
    up = build_micro_world(tmp_path)
    cfg = coarse_cfg({"coarse": {"steps": STEPS, "checkpoint_every": EVERY, "eval_prompts": 0}})
    OmegaConf.save(cfg, tmp_path / "cfg.yaml")
    (tmp_path / "up.json").write_text(json.dumps(up))
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        _cmd(tmp_path),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while not list((tmp_path / "work").glob("ckpt-*")) and time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: no cleanup runs
    proc.wait()
    ckpt = sorted((tmp_path / "work").glob("ckpt-*"))[-1]
    at = int(ckpt.name.split("-")[1])
    first = _steps_logged(tmp_path)
    assert 0 < at < STEPS and first[:at] == list(range(at)), (at, first)
    assert not (tmp_path / "out" / "length_trace.csv").exists()  # it really died mid-run

    again = subprocess.run(
        _cmd(tmp_path), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    metrics = json.loads(again.stdout.split("METRICS ", 1)[1])
    resumed_at = metrics["resumed_from_step"]
    assert resumed_at is not None and resumed_at >= at  # continued, not restarted
    assert metrics["steps"] == STEPS
    second = _steps_logged(tmp_path)[len(first) :]
    assert second == list(range(resumed_at, STEPS))  # the second run logged only the rest
    assert [int(r["step"]) for r in read_trace(tmp_path / "out")] == list(range(STEPS))
    assert (tmp_path / "out" / "actor" / "model.safetensors").is_file()

    # A new run dir (what a new Hydra run gets): its metrics.jsonl, which the pipeline copies
    # into the artifact, holds every step once, the ones before the checkpoint from the carry.
    (tmp_path / "out").rename(tmp_path / "out1")
    kept = {r["step"]: r for r in _rows_logged(tmp_path)}
    steps2 = STEPS + EVERY  # continue the finished run's last checkpoint for one more round
    OmegaConf.save(OmegaConf.merge(cfg, {"coarse": {"steps": steps2}}), tmp_path / "cfg.yaml")
    third = subprocess.run(
        _cmd(tmp_path, "run2"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    rows = _rows_logged(tmp_path, "run2")
    assert [r["step"] for r in rows] == list(range(steps2))
    last_ckpt = json.loads(third.stdout.split("METRICS ", 1)[1])["resumed_from_step"]
    for r in rows[:last_ckpt]:  # replayed from the checkpoint: the values logged at the time
        assert r["reward"] == kept[r["step"]]["reward"] and r["kl"] == kept[r["step"]]["kl"]


def test_logged_steps_skips_a_partial_last_line(tmp_path):
    from c2f_exp.coarse.stage import logged_steps

    path = tmp_path / "metrics.jsonl"
    assert logged_steps(path) == set()
    rows = [{"step": 0, "limit": 8}, {"step": 1, "limit": 8}, {"step": None, "steps": 2}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 2, "lim')
    assert logged_steps(path) == {0, 1}
