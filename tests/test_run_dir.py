"""Run directories (issue 25.2): two runs started in the same second never share one."""

from __future__ import annotations

import re
import subprocess
import sys

from omegaconf import OmegaConf

from tests.conftest import CONF, ROOT


def test_default_run_dir_keeps_date_time_and_adds_a_run_id(compose):
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    compose([])  # registers the schema and the run_id resolver
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = _compose(config_name="config", return_hydra_config=True)
    run_dir = OmegaConf.select(cfg, "hydra.run.dir")
    assert re.fullmatch(r"outputs/runs/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d-[0-9a-f]{6}", run_dir)
    assert OmegaConf.select(cfg, "hydra.run.dir") == run_dir  # one id per process


def test_two_runs_started_together_get_two_run_dirs():
    cmd = [sys.executable, "-m", "c2f_exp", "--cfg", "hydra", "--resolve", "-p", "hydra.run.dir"]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    dirs = [o[0].strip().splitlines()[-1] for o in outs]
    assert dirs[0] != dirs[1], dirs


def test_two_sweeps_started_together_get_two_sweep_dirs():
    cmd = [sys.executable, "-m", "c2f_exp", "--cfg", "hydra", "--resolve", "-p", "hydra.sweep.dir"]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    dirs = [o[0].strip().splitlines()[-1] for o in outs]
    assert all(
        re.fullmatch(r"outputs/multirun/[\d-]+/\d\d-\d\d-\d\d-[0-9a-f]{6}", d) for d in dirs
    )
    assert dirs[0] != dirs[1], dirs


def test_parallel_sweep_jobs_write_into_the_sweep_dir_the_launcher_made(tmp_path):
    """joblib runs jobs in worker processes, whose own `run_id` differs: each job's config
    carries the launcher's value (Hydra copies the resolver cache into every job's config), so
    all job dirs land in the one sweep dir. The jobs stop at preflight (missing merge inputs):
    only where they write is tested here, in seconds."""
    missing = [f"merger.{r}={tmp_path}/none" for r in ("base", "instruct", "coarse")]
    cmd = [sys.executable, "-m", "c2f_exp", "-m", "tracker=none", "stages=[merge]", *missing]
    cmd += ["seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "merger.base" in proc.stderr + proc.stdout, (proc.stdout + proc.stderr)[-3000:]
    sweeps = [p for p in (tmp_path / "outputs" / "multirun").glob("*/*") if p.is_dir()]
    assert len(sweeps) == 1, sweeps
    assert re.fullmatch(r"\d\d-\d\d-\d\d-[0-9a-f]{6}", sweeps[0].name)
    assert (sweeps[0] / "multirun.yaml").is_file()
    for job in ("0", "1"):
        assert (sweeps[0] / job / "manifest.json").is_file(), sorted(sweeps[0].iterdir())


def test_slurm_preset_requeues_timed_out_jobs():
    launcher = OmegaConf.load(CONF / "hydra" / "launcher" / "slurm.yaml")
    assert launcher.max_num_timeout >= 1  # stages resume from checkpoints: a requeue continues
