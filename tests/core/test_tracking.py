"""Trackers in this process: the multirun id and identity, MLflow on a local SQLite file (runs,
parent, params, histories, replay, artifacts), wandb + MLflow at once, the tracking URI's
precedence, preflight against dead and silent servers, a failing backend, the tracker group.

The end-to-end checks against a real `mlflow server` are in tests/e2e/test_sweeps.py.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from c2f_exp.core import tracking, tracking_mlflow
from c2f_exp.core.errors import ConfigError
from c2f_exp.core.tracking import RunIdentity, Tracker
from c2f_exp.sweeping import sweep_id
from tests.conftest import CONF
from tests.helpers.cli import run_inprocess
from tests.helpers.wandb_files import wandb_history, wandb_run_record


def tracker_cfg(backends: list[str], uri: str | None = None, **mlflow) -> object:
    return OmegaConf.create({
        "backends": backends, "mode": "offline", "project": "proj", "entity": None,
        "group": None, "tags": ["micro"],
        "mlflow": {"tracking_uri": uri, "experiment": None, "timeout_s": 2.0, **mlflow},
    })  # fmt: skip


def job(name: str, swept: dict, sweep_dir: Path) -> RunIdentity:
    return RunIdentity("multirun-x1", "multirun", name, True, swept, [], {}, str(sweep_dir), "x1")


# -- the multirun's id -------------------------------------------------------------------------
def test_sweep_id_is_written_once_and_shared_by_concurrent_jobs(tmp_path):
    sw = tmp_path / "a" / "day" / "sw"
    with ProcessPoolExecutor(4) as pool:  # jobs of a joblib sweep start together
        ids = set(pool.map(sweep_id, [sw] * 8))
    assert len(ids) == 1 and (sw / "sweep_id").read_text().strip() in ids
    assert sweep_id(sw) in ids  # the multirun resumed in the same dir: the same id
    assert sweep_id(tmp_path / "b" / "day" / "sw") not in ids  # a dir ending alike: another
    assert [p.name for p in sw.iterdir()] == ["sweep_id"]  # no temp files left


def _identity(compose, tmp: Path, overrides: list[str], job_ov: list[str], monkeypatch):
    """sweeping.identity in a (faked) multirun job `job_ov` of the master line `overrides`."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from c2f_exp import sweeping

    tmp.mkdir(parents=True)
    master = {"hydra": {"overrides": {"task": overrides}}}
    OmegaConf.save(OmegaConf.create(master), tmp / "multirun.yaml")
    hc = OmegaConf.create({"mode": RunMode.MULTIRUN, "sweep": {"dir": str(tmp)},
                           "overrides": {"task": job_ov}, "job": {"num": 1},
                           "sweeper": {"params": None}})  # fmt: skip
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: hc))
    cfg = compose(job_ov)
    return sweeping.identity(cfg, tmp / "1")


def test_identity_of_multiruns_groups_and_numbers(compose, tmp_path, monkeypatch):
    grid, job1 = ["merger.coefficient=0.5,[0.5,1.5]", "seed=1"], ["merger.coefficient=[0.5,1.5]"]
    a = _identity(compose, tmp_path / "x" / "day" / "sw", grid, [*job1, "seed=1"], monkeypatch)
    assert a.group == f"multirun-{sweep_id(tmp_path / 'x' / 'day' / 'sw')}"
    assert a.job_type == "multirun" and a.name == "lambda=[0.5,1.5]"  # not the experiment
    assert a.swept == {"lambda": "[0.5,1.5]"}  # readable; the numbers beside it:
    assert a.numbers == {"lambda_first": 0.5, "lambda_last": 1.5}
    assert a.config_keys() == {"lambda": "[0.5,1.5]", "lambda_first": 0.5, "lambda_last": 1.5}
    b = _identity(compose, tmp_path / "y" / "day" / "sw", grid, [*job1, "seed=1"], monkeypatch)
    assert b.group != a.group  # sweep dirs ending alike: two groups
    named = ["sweep=merge_coefficient", "merger.filter=none"]
    c = _identity(compose, tmp_path / "z", [*named, "merger.coefficient=1,2"],
                  [*named, "merger.coefficient=2"], monkeypatch)  # fmt: skip
    assert c.group.startswith("merge_coefficient-") and c.job_type == "merge_coefficient"
    assert c.swept == {"lambda": 2} and c.numbers == {"lambda_first": 2, "lambda_last": 2}


# -- MLflow on a local SQLite file ---------------------------------------------------------------
def _client(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("proj")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    return client, runs


def test_mlflow_runs_parent_params_histories_replay_and_artifacts(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    tcfg, sw = tracker_cfg(["mlflow"], uri), tmp_path / "sw"
    config = {"paths": {"root_dir": str(tmp_path)}, "judge": {"url": "http://me:hunter2@h"}}
    built = Tracker(tcfg, tmp_path / "j0", config, ident=job("lambda=0.5", {"lambda": 0.5}, sw))
    built.stage("coarse", tmp_path / "j0" / "coarse")
    for step in range(3):
        built.log({"reward": 0.25 * step, "kl": 0.5, "note": "text"}, step=step)
    built.summary({"final_reward": 0.5, "status": "done"})
    (tmp_path / "report.md").write_text("# report\n")
    (tmp_path / "length_trace.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # a file is a file
    built.images([tmp_path / "length_trace.png"])
    built.files([tmp_path / "report.md"])
    built.final({"facts": 1.5, "model": "fine"}, ["model", "facts"], [["fine", 1.5]])
    built.finish(0)
    reuser = Tracker(tcfg, tmp_path / "j1", config, ident=job("lambda=1", {"lambda": 1}, sw))
    reuser.stage("coarse", tmp_path / "j1" / "coarse")
    assert reuser.replay(tmp_path / "j0" / "coarse" / "metrics.jsonl") == 3
    reuser.finish(1)  # a failed job

    client, runs = _client(uri)
    parent, first, second = runs
    assert parent.info.run_name == "multirun-x1" and "mlflow.parentRunId" not in parent.data.tags
    assert {r.data.tags["mlflow.parentRunId"] for r in (first, second)} == {parent.info.run_id}
    assert json.loads((sw / "mlflow_parent.json").read_text())[uri]["run_id"] == (
        parent.info.run_id)  # fmt: skip
    assert (first.info.status, second.info.status) == ("FINISHED", "FAILED")
    assert first.data.params["lambda"] == "0.5" and second.data.params["lambda"] == "1"
    assert "hunter2" not in first.data.params["judge.url"]  # redacted, as wandb's config
    for run in (first, second):  # the replayed curve equals the logged one, step by step
        hist = client.get_metric_history(run.info.run_id, "coarse/reward")
        assert [(h.step, h.value) for h in hist] == [(0, 0.0), (1, 0.25), (2, 0.5)]
    assert "coarse/note" not in first.data.metrics  # text is not a metric
    assert first.data.metrics["coarse/final_reward"] == 0.5  # a summary number
    assert first.data.tags["coarse/status"] == "done"  # summary text: a tag
    assert first.data.metrics["final/facts"] == 1.5 and first.data.tags["final/model"] == "fine"
    arts = {a.path for d in ("", "coarse", "eval") for a in client.list_artifacts(
        first.info.run_id, d or None)}  # fmt: skip
    want = {"config.yaml", "coarse/length_trace.png", "coarse/report.md", "eval/table.json"}
    assert want <= arts
    cfg_file = client.download_artifacts(first.info.run_id, "config.yaml", str(tmp_path))
    assert "hunter2" not in Path(cfg_file).read_text()
    assert (tmp_path / "mlartifacts").is_dir()  # local artifacts beside the database


def test_wandb_and_mlflow_at_once(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    run_dir = tmp_path / "run"
    ident = RunIdentity("g", "tiny_c2f", "tiny_c2f-run", False, numbers={"lambda_first": 1})
    tr = Tracker(tracker_cfg(["wandb", "mlflow"], uri), run_dir, {}, ident=ident)
    tr.stage("coarse", run_dir / "coarse")
    tr.log({"reward": 1.0}, step=4)
    tr.finish(0)
    assert wandb_history(run_dir, "coarse/reward") == [1.0]
    assert wandb_run_record(run_dir).run_group == "g"
    client, (run,) = _client(uri)
    assert [(h.step, h.value) for h in client.get_metric_history(run.info.run_id,
            "coarse/reward")] == [(4, 1.0)]  # fmt: skip
    assert run.data.params["lambda_first"] == "1"


def test_tracking_uri_config_then_environment_then_local_sqlite(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri, src = tracking_mlflow.tracking_uri(tracker_cfg(["mlflow"]), str(tmp_path))
    assert uri == f"sqlite:///{tmp_path}/outputs/mlflow.db" and "local SQLite" in src
    assert tracking_mlflow._sqlite_path(uri) == tmp_path / "outputs" / "mlflow.db"
    assert tracking_mlflow._sqlite_path("sqlite:///outputs/m.db") == Path("outputs/m.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert tracking_mlflow.tracking_uri(tracker_cfg(["mlflow"]), None)[0] == "http://env:5000"
    cfg = tracker_cfg(["mlflow"], "http://cfg:5000")
    assert tracking_mlflow.tracking_uri(cfg, None) == (
        "http://cfg:5000", "tracker.mlflow.tracking_uri")  # fmt: skip


# -- preflight: no hang, one line ----------------------------------------------------------------
def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_preflight_names_the_setting_and_url_of_a_dead_or_silent_server(tmp_path):
    dead = f"http://127.0.0.1:{_port()}"
    with pytest.raises(ConfigError, match=r"^tracker\.mlflow\.tracking_uri: .*" + dead):
        tracking.preflight(tracker_cfg(["mlflow"], dead), None)
    silent = socket.socket()  # accepts connections, never answers: must not hang
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    url = f"http://user:pw@127.0.0.1:{silent.getsockname()[1]}"
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as err:
        tracking.preflight(tracker_cfg(["wandb", "mlflow"], url, timeout_s=1), None)
    silent.close()
    assert time.monotonic() - t0 < 5 and "waited 1s" in str(err.value)
    assert "pw" not in str(err.value) and "127.0.0.1" in str(err.value)
    tracking.preflight(tracker_cfg(["wandb"], dead), None)  # not an MLflow run: not checked


def test_preflight_passes_a_server_that_answers_health(tmp_path):
    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        tracking.preflight(tracker_cfg(["mlflow"], f"http://127.0.0.1:{server.server_port}"), None)
    finally:
        server.shutdown()


def test_cli_dead_server_and_unknown_tracker_are_one_line(tmp_path, capsys):
    dead = f"http://127.0.0.1:{_port()}"
    args = ["tracker=mlflow", f"tracker.mlflow.tracking_uri={dead}", "tracker.mlflow.timeout_s=1"]
    code, _, err = run_inprocess(args, tmp_path, capsys)
    assert code == 2 and err.count("error:") == 1, err
    assert err.startswith("error: tracker.mlflow.tracking_uri") and dead in err
    assert not (tmp_path / "cache").exists()  # stopped before any stage ran
    code, _, err = run_inprocess(["tracker=mlfow"], tmp_path / "b", capsys)
    assert code == 2 and err.count("error:") == 1, err
    assert "tracker=mlfow is not an option" in err
    assert "options: many, mlflow, none, wandb" in err


# -- the Tracker facade ------------------------------------------------------------------------
def test_a_failing_backend_is_dropped_and_the_rest_go_on(tmp_path, monkeypatch, caplog):
    calls = []

    class Broken:
        name = "broken"

        def __getattr__(self, method):
            def fail(*args):
                calls.append(method)
                raise ConnectionError("server gone")

            return fail

    monkeypatch.setattr(tracking, "_open", lambda *a: Broken())
    tr = Tracker(tracker_cfg(["mlflow"]), tmp_path, {})
    tr.stage("coarse", tmp_path / "coarse")
    tr.log({"reward": 1.0}, step=0)
    tr.finish(0)
    assert calls == ["stage"]  # dropped after its first failure, logged once
    assert "tracker broken failed (ConnectionError: server gone)" in caplog.text
    rows = (tmp_path / "coarse" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(rows[0])["reward"] == 1.0  # metrics.jsonl is still written


def test_tracker_options_match_the_backends(compose):
    names = sorted(p.stem for p in (CONF / "tracker").glob("*.yaml"))
    assert names == ["many", "mlflow", "none", "wandb"]
    got = {n: tracking.backends_of(compose([f"tracker={n}"]).tracker) for n in names}
    assert got == {"many": ["wandb", "mlflow"], "mlflow": ["mlflow"], "none": [],
                   "wandb": ["wandb"]}  # fmt: skip
    assert tracking.backends_of(OmegaConf.create({"backend": "none"})) == []  # older callers
