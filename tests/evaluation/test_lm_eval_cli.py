"""What a user's own tools do with a finished `debug=micro` run (issue 15): the lm-eval CLI on
the eval artifact's task YAMLs, the log's report path, and the model cards `huggingface_hub`
reads from every model directory the run wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from tests.conftest import read_manifest, run_cli

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1"}


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> dict:
    """Run the default pipeline once; returns {"tmp", "art": stage -> artifact, "log"}."""
    tmp = tmp_path_factory.mktemp("micro_outputs")
    proc = run_cli(["debug=micro", "tracker=none"], tmp, env=OFFLINE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    art = {s["stage"]: Path(s["path"]) for s in read_manifest(tmp)["stages"]}
    return {"tmp": tmp, "art": art, "log": proc.stdout + proc.stderr}


def test_lm_eval_cli_runs_the_finished_artifacts_tasks(micro, tmp_path):
    tasks = micro["art"]["eval"] / "lm_eval_tasks"
    for yaml in tasks.glob("*.yaml"):
        assert ".tmp-" not in yaml.read_text(), yaml  # no path into the renamed build dir
    cmd = [
        *(sys.executable, "-m", "lm_eval", "--model", "hf"),
        *("--model_args", f"pretrained={micro['art']['merge']},dtype=float32"),
        *("--tasks", "tinyworld_mc,tinyworld_about", "--include_path", str(tasks)),
        *("--device", "cpu", "--limit", "2", "--batch_size", "2"),
        *("--gen_kwargs", "max_gen_toks=4", "--output_path", str(tmp_path / "out")),
    ]
    env = {**os.environ, **OFFLINE}
    proc = subprocess.run(  # another cwd: lm-eval resolves relative data paths from there
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = (tmp_path / "out").rglob("results_*.json")
    res = json.loads(result.read_text())["results"]
    assert 0.0 <= res["tinyworld_mc"]["acc,none"] <= 1.0
    assert "wrong_facts,none" in res["tinyworld_about"]
    hib = json.loads(result.read_text())["higher_is_better"]["tinyworld_about"]
    assert hib["wrong_facts"] is False and hib["repetition_rate"] is False


def test_eval_report_log_line_names_the_final_artifact(micro):
    (line,) = [x for x in micro["log"].splitlines() if "eval report:" in x]
    report = micro["art"]["eval"] / "report.md"
    assert f"eval report: {report} " in line and report.is_file()
    assert str(micro["tmp"] / "run" / "eval" / "report.md") in line


@pytest.mark.parametrize(
    ("stage", "sub", "role"),
    [
        ("prepare", "base", "base"),
        ("prepare", "instruct", "instruct"),
        ("coarse", "actor", "coarse"),
        ("reward", "model", "reward"),
        ("merge", "", "fine"),
    ],
)
def test_model_dirs_have_hub_cards(micro, stage, sub, role):
    model_dir = micro["art"][stage] / sub
    card = ModelCard.load(model_dir / "README.md")
    d = card.data.to_dict()
    assert d["library_name"] == "transformers" and d["tags"][:2] == ["c2f_exp", role]
    assert d["c2f_exp"]["role"] == role
    assert "base_model" not in d  # every parent of the tiny world is a local directory
    parents = d["c2f_exp"]["parents"] or {}
    assert all(Path(p).is_dir() for p in parents.values()), parents  # final paths, not temp
    if role == "instruct":
        assert parents == {"base": str(micro["art"]["prepare"] / "base")}
    if role == "fine":
        assert set(parents) == {"base", "instruct", "coarse"}
        assert d["c2f_exp"]["recipe"]["method"] == "knowledge_residue"


def test_saved_tokenizers_use_a_class_transformers_4_knows(micro):
    for d in (
        micro["art"]["prepare"] / "base",
        micro["art"]["coarse"] / "actor",
        micro["art"]["merge"],
    ):
        cfg = json.loads((d / "tokenizer_config.json").read_text())
        assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast", d
