"""`python -m c2f_exp.compare`: table, seeds' mean ± s.e., plots, failed jobs, CLI errors.

Run directories are written by hand here (manifest.json + .hydra/overrides.yaml, the files a
job leaves), so every number below is known.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from c2f_exp.analysis import compare
from c2f_exp.analysis.summary import eval_table, headline
from tests.conftest import ROOT


def _eval_metrics(facts: float, rep: float, mt: float) -> dict:
    return {
        "instruct/tinyworld_about/correct_facts": 0.5,
        "fine/tinyworld_about/correct_facts": facts,
        "fine/tinyworld_about/gold_total": facts - rep,
        "fine/tinyworld_about/repetition_rate": rep,
        "fine/tinyworld_about/explained": 1.0,
        "fine/mt_bench/average": mt,
        "fine/tinyworld_mc/acc": 0.8,
        "fine/other_task/acc": 0.6,
        "fine/text_stats/eos_rate": 1.0,
    }


def write_job(sweep: Path, n: int, overrides: list[str], manifest: dict | None) -> Path:
    job = sweep / str(n)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if manifest is not None:
        (job / "manifest.json").write_text(json.dumps(manifest))
    return job


def manifest(facts: float, rep: float, mt: float, status: str = "done") -> dict:
    stages = [
        {"stage": "coarse", "status": "reused", "seconds": 0.1,
         "metrics": {"actor/heldout_facts_per_answer": 7.5, "tokens_generated": 1000,
                     "final_limit": 128, "final_reward": 0.3}},
        {"stage": "eval", "status": "done", "seconds": 20.0,
         "metrics": _eval_metrics(facts, rep, mt)},
    ]  # fmt: skip
    return {"experiment": "tiny_c2f", "status": status, "stages": stages}


@pytest.fixture
def sweep(tmp_path):
    """λ ∈ {0.5, 1} × seeds {0, 1}, plus a job that was killed before its manifest."""
    d = tmp_path / "multirun"
    values = {(0.5, 0): 2.0, (0.5, 1): 4.0, (1, 0): 5.0, (1, 1): 7.0}
    for n, ((lam, seed), facts) in enumerate(values.items()):
        ov = ["sweep=merge_coefficient", f"merger.coefficient={lam}", f"seed={seed}"]
        write_job(d, n, ov, manifest(facts, rep=0.1 * n, mt=3.0))
    job = write_job(d, 4, ["sweep=merge_coefficient", "merger.coefficient=2", "seed=0"], None)
    (job / "__main__.log").write_text("[x][c2f_exp][ERROR] - merger.coefficient must be ...\n")
    return d


def test_headline_prefers_the_fine_model_and_averages_lm_eval_accuracies():
    h = headline(manifest(6.0, 0.2, 4.0))
    assert h["model"] == "fine" and h["facts"] == 6.0 and h["gold_total"] == pytest.approx(5.8)
    assert h["mt_bench"] == 4.0 and h["lm_eval_acc"] == pytest.approx(0.7)  # (0.8 + 0.6) / 2
    assert h["coarse_facts"] == 7.5 and h["tokens"] == 1000 and h["status_coarse"] == "reused"
    no_eval = {"stages": manifest(1, 0, 1)["stages"][:1]}
    assert headline(no_eval)["model"] == "coarse" and headline(no_eval)["facts"] == 7.5


def test_eval_table_has_a_row_per_model():
    cols, rows = eval_table(manifest(6.0, 0.2, 4.0))
    assert cols[0] == "model" and {r[0] for r in rows} == {"instruct", "fine"}
    fine = next(r for r in rows if r[0] == "fine")
    assert fine[cols.index("tinyworld_about/correct_facts")] == 6.0


def test_compare_writes_table_seed_errors_plots_and_failed_rows(sweep):
    rows = compare.compare([sweep], sweep)
    assert [r["status"] for r in rows] == ["done"] * 4 + ["failed"]
    assert "merger.coefficient must be" in rows[4]["error"]
    with open(sweep / "compare.csv") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0])[:4] == ["job", "lambda", "seed", "status"]  # sweep itself is constant
    assert [t["lambda"] for t in table] == ["0.5", "0.5", "1", "1", "2"]
    assert table[2]["facts"] == "5.0" and table[2]["mt_bench"] == "3.0"
    md = (sweep / "compare.md").read_text()
    assert "**failed**" in md
    # mean ± s.e. over the two seeds: λ=0.5 -> 3.00 ± 1.00, λ=1 -> 6.00 ± 1.00
    assert "| 0.5 | 2 | 3.00 ± 1.00 |" in md and "| 1 | 2 | 6.00 ± 1.00 |" in md
    assert (sweep / "compare_lambda.png").stat().st_size > 0
    assert (sweep / "compare_tokens.png").stat().st_size > 0


def test_mean_se():
    m, se = compare.mean_se([1.0, 2.0, 3.0])
    assert m == 2.0 and se == pytest.approx(1.0 / math.sqrt(3))
    assert compare.mean_se([4.0]) == (4.0, 0.0)


def test_several_run_dirs_and_a_running_manifest(tmp_path):
    a = write_job(tmp_path / "a", 0, ["merger.coefficient=1"], manifest(5, 0, 3))
    b = write_job(tmp_path / "b", 0, ["merger.coefficient=2"], manifest(6, 0, 3, "running"))
    rows = compare.compare([a, b], tmp_path / "out")
    assert [r["status"] for r in rows] == ["done", "failed"]
    assert "did not finish" in rows[1]["error"]
    assert rows[0]["job"] != rows[1]["job"]  # same job number in two sweeps: named by path


def test_cli_errors_on_a_missing_dir(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "c2f_exp.compare", str(tmp_path / "nope")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.startswith("error: compare:")
    assert "Traceback" not in proc.stderr


def test_seed_means_skip_jobs_that_lack_a_metric(tmp_path):
    d = tmp_path / "multirun"
    for n, seed in enumerate((0, 1)):
        m = manifest(4.0 + 2 * n, 0.0, 3.0)
        if n == 1:  # an eval without MT-Bench: the mean over seeds uses the one value there is
            del m["stages"][1]["metrics"]["fine/mt_bench/average"]
        write_job(d, n, ["merger.coefficient=1", f"seed={seed}"], m)
    compare.compare([d], d)
    md = (d / "compare.md").read_text()
    assert "| 2 | 5.00 ± 1.00 |" in md  # facts over both seeds
    assert "3.00 ± 0.00" in md  # mt_bench from seed 0 alone


def test_per_layer_lambda_gets_numeric_first_and_last_columns(tmp_path):
    d = tmp_path / "multirun"
    for n, lam in enumerate(["0.5", "[0.5,1.5]", "2"]):
        write_job(d, n, [f"merger.coefficient={lam}", "merger.filter=none"], manifest(5, 0, 3))
    rows = compare.compare([d], d)
    assert [(r["lambda"], r["lambda_first"], r["lambda_last"]) for r in rows] == [
        (0.5, 0.5, 0.5),
        ("[0.5,1.5]", 0.5, 1.5),
        (2, 2, 2),
    ]  # numbers typed as numbers
    with open(d / "compare.csv") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0])[:5] == ["job", "lambda", "lambda_first", "lambda_last", "status"]
    assert [t["lambda_last"] for t in table] == ["0.5", "1.5", "2"]
    assert "| 0 | 0.5 | 0.5 | 0.5 | done |" in (d / "compare.md").read_text()  # as written


def test_swept_values_are_typed():
    assert [compare.typed(v) for v in ["2", "0.5", "1e-3", "[1,2]", "none", "true", None]] == [
        2, 0.5, 0.001, [1, 2], "none", "true", None]  # fmt: skip
