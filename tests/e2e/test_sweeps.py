"""Sweeps: the ready-made sweep files, reuse across jobs (sequential, joblib, submitit_local),
up-front validation of a whole grid, failed jobs, tracker grouping (wandb offline files, a real
MLflow server), replayed curves of reused stages, optuna search.

Multiruns run in subprocesses on debug=micro settings; the tests that count trainings use a
fresh artifact cache each, the others share one prebuilt cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.helpers.mlflow_server import MlflowServer, free_port
from tests.helpers.wandb_files import wandb_history, wandb_keys, wandb_run_record

SWEEPS = sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml"))
UPSTREAM = ["prepare", "reward", "coarse"]
MERGE_ONLY = ["debug=micro", "tracker=none", "stages=[prepare,reward,coarse,merge]"]


def run_sweep(args: list[str], sweep_dir: Path, cache: Path, timeout: int = 600, env=None):
    """`python -m c2f_exp -m <args>` with its sweep dir and artifact cache under tmp."""
    env = {**os.environ, "TQDM_DISABLE": "1", "WANDB_SILENT": "true", **(env or {})}
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


def coarse_rows(manifest: dict) -> list[dict]:
    """The Coarse Actor's stored metrics.jsonl rows (in its cache artifact)."""
    art = Path(next(s["path"] for s in manifest["stages"] if s["stage"] == "coarse"))
    return [json.loads(ln) for ln in (art / "metrics.jsonl").read_text().splitlines()]


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
    sw, cache = tmp_path / "a" / "day" / "sw", tmp_path / "cache"
    args = ["debug=micro", "stages=[prepare,reward,coarse,merge]", "merger.coefficient=0,0.5,2"]
    proc = run_sweep(args, sw, cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ms = manifests(sw)
    assert len(ms) == 3 and all(m["status"] == "done" for m in ms)
    assert trainings(ms) == {"prepare": 1, "reward": 1, "coarse": 1, "merge": 3}
    runs = [wandb_run_record(sw / str(i)) for i in range(3)]
    sweep_id = (sw / "sweep_id").read_text().strip()
    assert {r.run_group for r in runs} == {f"multirun-{sweep_id}"}, "one group per multirun"
    assert {r.job_type for r in runs} == {"multirun"}  # an ad-hoc grid, not "tiny_c2f"
    assert all("multirun" in r.tags and "sweep:tiny_c2f" not in r.tags for r in runs)
    assert [r.display_name for r in runs] == ["lambda=0", "lambda=0.5", "lambda=2"]
    cfgs = [{i.key: json.loads(i.value_json) for i in r.config.update} for r in runs]
    assert [c["lambda"] for c in cfgs] == [0, 0.5, 2]  # swept values: top-level config keys
    assert [c["lambda_last"] for c in cfgs] == [0, 0.5, 2]  # numeric beside it, always
    built = next(i for i, m in enumerate(ms) if m["stages"][2]["status"] == "done")
    history = wandb_keys(sw / str(built), "history")  # the job that trained the Coarse Actor
    assert {"coarse/limit", "coarse/reward", "coarse/kl", "coarse/gate"} <= history
    reused = 2 - built  # a job that reused it: the same curves, replayed; plot, summary
    rows = coarse_rows(ms[reused])
    want = [r["reward"] for r in rows if "reward" in r]
    assert want and wandb_history(sw / str(reused), "coarse/reward") == want
    assert wandb_history(sw / str(built), "coarse/reward") == want  # what training logged
    steps = wandb_history(sw / str(built), "coarse/step")  # rows without a step: the last one
    assert steps[:3] == [r["step"] for r in rows[:3]] == [0, 1, 2]
    assert wandb_history(sw / str(reused), "coarse/step") == steps  # the same x-axis
    assert "coarse/length_trace/_type" in wandb_keys(sw / str(reused), "history")
    summary = wandb_keys(sw / str(reused), "summary")
    assert {"final/facts", "final/gold_total", "final/tokens", "coarse/artifact"} <= summary
    assert "coarse/replayed_rows" in summary
    models = {s["stage"]: s["models"] for s in ms[1]["stages"]}
    assert set(models["prepare"]) == {"base", "instruct"} and set(models["merge"]) == {"fine"}
    assert (Path(models["coarse"]["coarse"]) / "config.json").is_file()
    assert "merge" in (sw / "compare.md").read_text() or (sw / "compare.csv").is_file()
    # the same sweep again (e.g. after an interruption) in a dir whose last parts are alike:
    # nothing is trained or merged twice, and it is a group of its own
    again = tmp_path / "b" / "day" / "sw"
    proc = run_sweep(args, again, cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert trainings(manifests(again)) == {
        "prepare": 0, "reward": 0, "coarse": 0, "merge": 0}  # fmt: skip
    group = wandb_run_record(again / "0").run_group
    assert group.startswith("multirun-") and group != runs[0].run_group
    assert wandb_history(again / "0", "coarse/reward") == want


@pytest.mark.slow  # default suite < 10 min on 2 cores; run with -m slow
def test_joblib_parallel_jobs_never_train_the_same_artifact_twice(tmp_path):
    sw, db = tmp_path / "sw", f"sqlite:///{tmp_path}/mlflow.db"  # a fresh local MLflow store
    args = [*MERGE_ONLY, "merger.coefficient=0.5,1,2", "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2", "tracker=mlflow",
            f"tracker.mlflow.tracking_uri={db}"]  # fmt: skip
    proc = run_sweep(args, sw, tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "n_jobs=2" in proc.stderr + proc.stdout  # it really ran under joblib
    ms = manifests(sw)
    assert trainings(ms) == {"prepare": 1, "reward": 1, "coarse": 1, "merge": 3}
    sweep_id = (sw / "sweep_id").read_text().strip()
    assert {m["sweep"]["group"] for m in ms} == {f"multirun-{sweep_id}"}
    from mlflow.tracking import MlflowClient  # parallel jobs created the SQLite store together

    client = MlflowClient(tracking_uri=db)
    runs = client.search_runs([client.get_experiment_by_name("c2f_exp").experiment_id])
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs} - {None}
    assert len(runs) == 4 and len(parents) == 1


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
    sweep_id = (sw / "sweep_id").read_text().strip()
    assert {m["sweep"]["group"] for m in ms} == {f"multirun-{sweep_id}"}  # one, in subprocesses


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


# -- MLflow: a real tracking server (sqlite backend) read back with MlflowClient -------------
@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """Module-scoped and listed before shared_cache, so it boots while that cache builds;
    `.wait()` returns its URL."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


def test_mlflow_nests_jobs_and_replays_reused_curves(mlflow_server, shared_cache, tmp_path):
    from mlflow.tracking import MlflowClient

    from c2f_exp.analysis.summary import headline

    url, sw = mlflow_server.wait(), tmp_path / "sw"
    args = ["debug=micro", "tracker=mlflow", "stages=[prepare,reward,coarse,merge]",
            "merger.coefficient=0.5,[0.5,1.5]"]  # fmt: skip
    # tracker.mlflow.tracking_uri is null: $MLFLOW_TRACKING_URI is honoured
    proc = run_sweep(args, sw, shared_cache, env={"MLFLOW_TRACKING_URI": url})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ms = manifests(sw)
    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name("c2f_exp")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = sorted((r for r in runs if r not in parents), key=lambda r: r.info.run_name)
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.run_name == f"multirun-{(sw / 'sweep_id').read_text().strip()}"
    assert parent.info.status == "FINISHED"  # ended by the sweep's end
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert [c.info.run_name for c in children] == ["lambda=0.5", "lambda=[0.5,1.5]"]
    params = [c.data.params for c in children]
    assert [(p["lambda"], p["lambda_first"], p["lambda_last"]) for p in params] == [
        ("0.5", "0.5", "0.5"), ("[0.5,1.5]", "0.5", "1.5")]  # fmt: skip
    rows = coarse_rows(ms[0])
    for child, m in zip(children, ms, strict=True):  # both reused the shared Coarse Actor
        rid, tags = child.info.run_id, child.data.tags
        coarse = next(s for s in m["stages"] if s["stage"] == "coarse")
        assert coarse["status"] == "reused" and tags["coarse/status"] == "reused"
        assert tags["coarse/artifact"] == coarse["config_hash"]  # which artifact was replayed
        for key in ("reward", "kl", "limit"):
            got = [(h.step, h.value) for h in client.get_metric_history(rid, f"coarse/{key}")]
            want = [(r["step"], pytest.approx(r[key])) for r in rows if key in r]
            assert want and got == want, key
        final = headline(m)
        assert child.data.metrics["final/reward"] == pytest.approx(final["reward"])
        assert child.data.metrics["final/tokens"] == final["tokens"]
        assert child.data.tags["final/model"] == final["model"]
        files = {a.path for a in client.list_artifacts(rid)}
        files |= {a.path for a in client.list_artifacts(rid, "coarse")}
        assert {"config.yaml", "coarse/length_trace.png"} <= files
    # compare.csv: the per-layer λ as numbers beside the readable value
    import csv

    with open(sw / "compare.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [(t["lambda"], t["lambda_first"], t["lambda_last"]) for t in table] == [
        ("0.5", "0.5", "0.5"), ("[0.5,1.5]", "0.5", "1.5")]  # fmt: skip


def test_unreachable_mlflow_server_stops_the_sweep_at_once(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    args = ["debug=micro", "tracker=mlflow", f"tracker.mlflow.tracking_uri={url}",
            "tracker.mlflow.timeout_s=2", "merger.coefficient=0.5,1"]  # fmt: skip
    t0 = time.monotonic()
    proc = run_sweep(args, tmp_path / "sw", tmp_path / "cache", timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert "tracker.mlflow.tracking_uri" in errors[0] and url in errors[0]
    assert "Traceback" not in proc.stderr and time.monotonic() - t0 < 60
    assert not (tmp_path / "sw" / "0").exists() and not (tmp_path / "cache").exists()
