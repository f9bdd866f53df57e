"""Sweeps: the ready-made sweep files, reuse across jobs (sequential, joblib, submitit_local),
up-front validation of a whole grid, failed jobs, wandb grouping, optuna search.

Multiruns run in subprocesses on debug=micro settings; the tests that count trainings use a
fresh artifact cache each, the others share one prebuilt cache.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SWEEPS = sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml"))
UPSTREAM = ["prepare", "reward", "coarse"]
MERGE_ONLY = ["debug=micro", "tracker=none", "stages=[prepare,reward,coarse,merge]"]


def run_sweep(args: list[str], sweep_dir: Path, cache: Path, timeout: int = 600):
    """`python -m c2f_exp -m <args>` with its sweep dir and artifact cache under tmp."""
    env = {**os.environ, "TQDM_DISABLE": "1", "WANDB_SILENT": "true"}
    cmd = [sys.executable, "-m", "c2f_exp", "-m", f"hydra.sweep.dir={sweep_dir}",
           f"paths.cache_dir={cache}", *args]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def manifests(sweep_dir: Path) -> list[dict]:
    jobs = sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return [json.loads((j / "manifest.json").read_text()) for j in jobs]


def trainings(ms: list[dict]) -> dict[str, int]:
    """stage -> how many jobs built it (status done) rather than reused it."""
    out: dict[str, int] = {}
    for m in ms:
        for s in m["stages"]:
            out[s["stage"]] = out.get(s["stage"], 0) + (s["status"] == "done")
    return out


def wandb_records(job_dir: Path) -> list:
    """The protobuf `Record`s of a job's offline wandb run file.

    The .wandb file is a LevelDB-style log (7-byte file header, 32 KiB blocks of chunks with
    a 7-byte crc/length/type header) of protobuf `Record`s: read with wandb's own protobufs.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    (f,) = job_dir.glob("wandb/offline-run-*/*.wandb")
    data, pos, buf, block, out = f.read_bytes(), 7, b"", 32768, []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
    return out


def wandb_run_record(job_dir: Path):
    """The `run` record (group, name, job_type, config) of a job's offline wandb run."""
    return next(r.run for r in wandb_records(job_dir) if r.WhichOneof("record_type") == "run")


def wandb_keys(job_dir: Path, kind: str) -> set[str]:
    """Keys a job logged as `history` rows or `summary` updates."""
    recs = [
        getattr(r, kind) for r in wandb_records(job_dir) if r.WhichOneof("record_type") == kind
    ]
    items = [i for rec in recs for i in (rec.item if kind == "history" else rec.update)]
    return {i.key or "/".join(i.nested_key) for i in items}


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """A micro artifact cache with prepare, reward and coarse built once."""
    tmp = tmp_path_factory.mktemp("sweepcache")
    proc = run_sweep([*MERGE_ONLY, "stages=[prepare,reward,coarse]"], tmp / "sw", tmp / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "cache"


@pytest.mark.parametrize("name", SWEEPS)
def test_every_sweep_file_composes_and_every_job_validates(name, compose):
    from c2f_exp.config import STAGE_ORDER, validate
    from c2f_exp.sweeping import grid_jobs

    text = (ROOT / "sweeps" / f"{name}.yaml").read_text()
    head = text.split("\n\n")[0]
    assert text.startswith("# @package _global_\n# Question:"), "starts with its question"
    assert f"python -m c2f_exp -m sweep={name}" in head, "documents its one line"
    cfg = compose([f"sweep={name}"])
    assert cfg.sweep.name == name
    full = _compose_with_hydra([f"sweep={name}"])
    jobs = grid_jobs(full)
    if jobs is None:  # optuna: parameters are drawn per trial
        assert "params" in full.hydra.sweeper and full.hydra.sweeper.direction == "maximize"
        validate(cfg, STAGE_ORDER)
        return
    assert len(jobs) >= 3
    for overrides in jobs:
        assert f"sweep={name}" in overrides
        validate(compose(list(overrides)), STAGE_ORDER)


def _compose_with_hydra(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from c2f_exp.config import register

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def test_sweep_grids_are_what_the_issue_asks(compose):
    from c2f_exp.sweeping import grid_jobs

    def values(name: str, key: str) -> list[str]:
        jobs = grid_jobs(_compose_with_hydra([f"sweep={name}"]))
        return sorted({o.split("=", 1)[1] for j in jobs for o in j if o.startswith(key + "=")})

    lam = values("merge_coefficient", "merger.coefficient")
    assert "0" in lam and len(lam) >= 7 and {"[0.5,1.5]", "[1.5,0.5]"} <= set(lam)
    assert set(values("merge_coefficient", "merger.filter")) == {
        "none", "magnitude", "dare", "sign_agree"}  # fmt: skip
    assert len(values("length_growth", "length_schedule.rate")) >= 3
    assert len(values("length_growth", "length_schedule.kappa")) >= 2
    scheds = values("schedule_ablation", "length_schedule")
    assert set(scheds) == {"fixed_lmin", "fixed", "linear", "step", "continuous_max"}
    assert len(values("schedule_ablation", "coarse.seed")) >= 3
    assert compose(["sweep=schedule_ablation"]).coarse.token_budget > 0
    assert compose(["sweep=schedule_ablation", "debug=micro"]).coarse.steps == 3  # micro wins
    assert compose(["length_schedule=fixed_lmin"]).length_schedule.l_max == compose(
        ["length_schedule=continuous_max"]).length_schedule.l_min  # fmt: skip


def test_sequential_sweep_trains_upstream_once_and_groups_wandb(tmp_path):
    sw, cache = tmp_path / "sw", tmp_path / "cache"
    args = ["debug=micro", "stages=[prepare,reward,coarse,merge]", "merger.coefficient=0,0.5,2"]
    proc = run_sweep(args, sw, cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ms = manifests(sw)
    assert len(ms) == 3 and all(m["status"] == "done" for m in ms)
    assert trainings(ms) == {"prepare": 1, "reward": 1, "coarse": 1, "merge": 3}
    runs = [wandb_run_record(sw / str(i)) for i in range(3)]
    assert len({r.run_group for r in runs}) == 1, "one wandb group per multirun"
    assert runs[0].run_group.startswith("tiny_c2f-")
    assert [r.display_name for r in runs] == ["lambda=0", "lambda=0.5", "lambda=2"]
    cfgs = [{i.key: json.loads(i.value_json) for i in r.config.update} for r in runs]
    assert [c["lambda"] for c in cfgs] == [0, 0.5, 2]  # swept values: top-level config keys
    built = next(i for i, m in enumerate(ms) if m["stages"][2]["status"] == "done")
    history = wandb_keys(sw / str(built), "history")  # the job that trained the Coarse Actor
    assert {"coarse/limit", "coarse/reward", "coarse/kl", "coarse/gate"} <= history
    reused = wandb_keys(sw / str(2 - built), "history")  # one that reused it: plot, summary
    assert "coarse/length_trace/_type" in reused  # the stage plot as a wandb image
    summary = wandb_keys(sw / str(2 - built), "summary")
    assert {"final/facts", "final/gold_total", "final/tokens", "coarse/artifact"} <= summary
    models = {s["stage"]: s["models"] for s in ms[1]["stages"]}
    assert set(models["prepare"]) == {"base", "instruct"} and set(models["merge"]) == {"fine"}
    assert (Path(models["coarse"]["coarse"]) / "config.json").is_file()
    assert "merge" in (sw / "compare.md").read_text() or (sw / "compare.csv").is_file()
    # the same sweep again (e.g. after an interruption): nothing is trained or merged twice
    proc = run_sweep(args, tmp_path / "again", cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert trainings(manifests(tmp_path / "again")) == {
        "prepare": 0, "reward": 0, "coarse": 0, "merge": 0}  # fmt: skip


@pytest.mark.slow  # default suite < 10 min on 2 cores; run with -m slow
def test_joblib_parallel_jobs_never_train_the_same_artifact_twice(tmp_path):
    sw = tmp_path / "sw"
    args = [*MERGE_ONLY, "merger.coefficient=0.5,1,2", "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2"]  # fmt: skip
    proc = run_sweep(args, sw, tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "n_jobs=2" in proc.stderr + proc.stdout  # it really ran under joblib
    assert trainings(manifests(sw)) == {"prepare": 1, "reward": 1, "coarse": 1, "merge": 3}


def test_submitit_local_launcher_runs_the_sweep(tmp_path, shared_cache):
    sw = tmp_path / "sw"
    args = [*MERGE_ONLY, "merger.coefficient=0.5,1", "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10"]  # fmt: skip
    proc = run_sweep(args, sw, shared_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sw / ".submitit").is_dir()  # jobs went through submitit
    ms = manifests(sw)
    assert trainings(ms) == {"prepare": 0, "reward": 0, "coarse": 0, "merge": 2}
    assert [m["sweep"]["swept"] for m in ms] == [{"lambda": 0.5}, {"lambda": 1}]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["merger.coeficient=1,2"], "merger.coeficient"),  # a swept key that does not exist
        (["+merger.coeficient=1,2"], "merger.coeficient"),  # ... even with Hydra's + prefix
        (["merger.filter=none,bogus"], "merger.filter"),  # fails validation in job 1 only
        (["merger.coefficient=1", "merger.density=0.5,2"], "merger.density"),
    ],
)
def test_bad_sweep_is_refused_before_any_job_trains(tmp_path, args, named):
    proc = run_sweep(["debug=micro", "tracker=none", *args], tmp_path / "sw", tmp_path / "cache")
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: sweep job")]
    assert len(errors) == 1 and named in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "cache").exists(), "nothing may be built"


def test_unknown_sweep_name_lists_the_sweeps(tmp_path):
    proc = run_sweep(["sweep=merge_coeficient"], tmp_path / "sw", tmp_path / "cache")
    assert proc.returncode != 0
    assert "sweep/merge_coeficient" in proc.stderr and "merge_coefficient" in proc.stderr
    assert not (tmp_path / "cache").exists()


def test_failed_job_is_shown_by_compare_and_fails_the_sweep(tmp_path, shared_cache):
    sw = tmp_path / "sw"
    args = [*MERGE_ONLY, f"merger.coarse=null,{tmp_path}/missing_actor"]
    proc = run_sweep(args, sw, shared_cache)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: sweep job 1 failed" in proc.stderr
    ms = manifests(sw)
    assert [m["status"] for m in ms] == ["done", "failed"]
    assert "missing_actor" in ms[1]["error"]
    csv_text = (sw / "compare.csv").read_text()
    assert "failed" in csv_text and "missing_actor" in csv_text
    assert "**failed**" in (sw / "compare.md").read_text()


@pytest.mark.slow  # ~36 s; the default suite stays under 10 minutes
def test_optuna_merge_search_returns_the_objective(tmp_path, shared_cache):
    sw = tmp_path / "sw"
    objective = "fine/text_stats/distinct_2"
    args = ["sweep=merge_search", "debug=micro", "tracker=none", "hydra.sweeper.n_trials=2",
            f"sweep.objective=eval/{objective}"]  # fmt: skip
    proc = run_sweep(args, sw, shared_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from omegaconf import OmegaConf

    res = OmegaConf.load(sw / "optimization_results.yaml")
    ms = manifests(sw)
    values = [next(s for s in m["stages"] if s["stage"] == "eval")["metrics"][objective]
              for m in ms]  # fmt: skip
    assert res.best_value == pytest.approx(max(values))  # the sweeper saw our objective
    coefs = [next(s for s in m["stages"] if s["stage"] == "merge") for m in ms]
    assert len({c["config_hash"] for c in coefs}) == 2  # two different λ anchor pairs merged
    assert set(ms[0]["sweep"]["swept"]) == {"lambda_first", "lambda_last"}


@pytest.mark.parametrize(
    ("name", "extra", "jobs"),
    [  # each sweep's one line, narrowed on the command line to keep the suite short
        pytest.param("length_growth", [], 6, marks=pytest.mark.slow),  # default suite < 10 min
        pytest.param("schedule_ablation", ["coarse.seed=0"], 5, marks=pytest.mark.slow),
        pytest.param(
            "seeds", ["seed=0,1", "stages=[prepare,reward,coarse]"], 2, marks=pytest.mark.slow
        ),
        ("merge_coefficient", ["merger.filter=none", "stages=[prepare,reward,coarse,merge]"], 9),
    ],
)
def test_each_sweep_runs_its_one_line_at_micro(tmp_path, shared_cache, name, extra, jobs):
    """The README's one line (+ debug=micro, which shrinks every job of a sweep)."""
    sw = tmp_path / "sw"
    proc = run_sweep([f"sweep={name}", "debug=micro", "tracker=none", *extra], sw, shared_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ms = manifests(sw)
    assert len(ms) == jobs and all(m["status"] == "done" for m in ms)
    assert all(m["sweep"]["name"] == name for m in ms)
    if name == "merge_coefficient":  # merger.filter=none fixed on the command line: not swept
        assert all(set(m["sweep"]["swept"]) == {"lambda"} for m in ms)
    coarse = [s for m in ms for s in m["stages"] if s["stage"] == "coarse"]
    assert all(s["metrics"]["steps"] <= 3 for s in coarse)  # debug=micro won over the sweep
    assert (sw / "compare.csv").is_file() and (sw / "compare.md").is_file()


def test_identity_outside_a_hydra_run(compose, monkeypatch):
    from hydra.core.hydra_config import HydraConfig

    from c2f_exp.sweeping import identity, short_name

    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: False))
    ident = identity(compose(["sweep=seeds"]), Path("/tmp/r1"))
    assert not ident.multirun and ident.name == "tiny_c2f-r1" and ident.job_type == "seeds"
    assert ident.group == "tiny_c2f" and ident.swept == {}
    assert [short_name(k) for k in ("merger.coefficient", "+length_schedule.rate", "seed")] == [
        "lambda", "rate", "seed"]  # fmt: skip
