"""The eval stage and its report on two tiny models built in-process.

base is prompted plainly, instruct with its chat template; both are untrained (seeded).
"""

from __future__ import annotations

import json

import pytest

from c2f_exp.evaluation import report
from tests.helpers.eval import eval_cfg, make_ctx

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def stage_run(tiny_artifact, tmp_path_factory):
    from c2f_exp.evaluation.stage import EvalStage

    tmp = tmp_path_factory.mktemp("eval")
    cfg = eval_cfg(
        {"eval.lm_eval.limit": 4, "eval.mt_bench.limit": 4, "eval.mt_bench.max_new_tokens": 8}
    )
    EvalStage().preflight(cfg)
    ctx, out = make_ctx(cfg, tiny_artifact, tmp)
    metrics = EvalStage().run(ctx, out)
    return ctx, out, metrics


def test_stage_writes_results_report_and_plots(stage_run):
    ctx, out, metrics = stage_run
    data = json.loads((out / "results.json").read_text())
    res = data["results"]
    assert list(res) == ["base", "instruct"]
    assert data["models"]["base"]["chat"] is False and data["models"]["instruct"]["chat"]
    for model in res.values():
        assert 0.0 <= model["tinyworld_mc"]["acc"] <= 1.0
        assert set(model["tinyworld_about"]) >= {"gold_total", "correct_facts"}
        assert 1.0 <= model["mt_bench"]["average"] <= 10.0
        assert model["text_stats"]["n"] == 8  # 4 questions x 2 turns
    assert metrics["instruct/tinyworld_mc/acc"] == res["instruct"]["tinyworld_mc"]["acc"]
    md = (out / "report.md").read_text()
    assert "| task | metric | base | instruct |" in md
    assert "![key_metrics](plots/key_metrics.png)" in md
    for name in ("key_metrics.png", "mt_bench_radar.png"):
        png = out / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (ctx.stage_dir / "plots" / name).is_file()  # published to <run>/eval/
    assert (ctx.stage_dir / "results.json").read_text() == (out / "results.json").read_text()
    lines = (ctx.stage_dir / "metrics.jsonl").read_text().splitlines()
    assert "base/mt_bench/average" in json.loads(lines[-1])


def test_stage_outputs_are_fastchat_and_lm_eval_files(stage_run):
    _, out, _ = stage_run
    for model in ("base", "instruct"):
        rows = [
            json.loads(x)
            for x in (out / "mt_bench" / "model_answer" / f"{model}.jsonl")
            .read_text()
            .splitlines()
        ]
        assert len(rows) == 4 and all(len(r["choices"][0]["turns"]) == 2 for r in rows)
        assert (out / "lm_eval" / model / "tinyworld_mc.jsonl").is_file()
    judged = (out / "mt_bench" / "model_judgment" / "tinyworld_gold_single.jsonl").read_text()
    assert len(judged.splitlines()) == 2 * 4 * 2
    yaml_text = (out / "lm_eval_tasks" / "tinyworld_mc.yaml").read_text()
    assert str((out / "lm_eval_tasks" / "tinyworld_mc.jsonl").resolve()) in yaml_text


def test_explicit_models_and_upstream_coarse_fine(tiny_artifact, tmp_path):
    from c2f_exp.evaluation.lineup import resolve_models

    cfg = eval_cfg()
    coarse = tmp_path / "coarse"
    (coarse / "actor").mkdir(parents=True)
    ctx, _ = make_ctx(
        cfg,
        tiny_artifact,
        tmp_path,
        {"coarse": {"path": str(coarse)}, "merge": {"path": str(tiny_artifact / "instruct")}},
    )
    refs = resolve_models(ctx)
    assert [(r.name, r.chat) for r in refs] == [
        ("base", False),
        ("instruct", True),
        ("coarse", False),
        ("fine", True),
    ]
    assert refs[2].path == str(coarse / "actor")
    assert refs[2].tokenizer == str(tiny_artifact / "base")  # actor dir without a tokenizer
    cfg.eval.models = {"mine": str(tiny_artifact / "base"), "base": str(tiny_artifact / "base")}
    assert [(r.name, r.chat) for r in resolve_models(ctx)] == [("base", False), ("mine", True)]


def test_table_and_key_metrics_order_models_and_rows():
    res = {
        "fine": {"t": {"acc": 0.5}, "mt_bench": {"average": 6.0, "category/x": 5.0}},
        "base": {"t": {"acc": 0.25}, "text_stats": {"distinct_2": 0.3, "n": 4.0}},
        "other": {},
    }
    rows = report.table_rows(res, ["t"])
    assert rows == [("t", "acc"), ("mt_bench", "average"), ("text_stats", "distinct_2")]
    table = report.markdown_table(res, rows).splitlines()
    assert table[0] == "| task | metric | base | fine | other |"
    assert table[2] == "| t | acc | 0.250 | 0.500 | – |"
    assert report.key_metrics(res, [], ["t"]) == [
        ("t", "acc"),
        ("mt_bench", "average"),
        ("text_stats", "distinct_2"),
    ]
    assert report.key_metrics(res, ["t/acc", "t/missing"], ["t"]) == [("t", "acc")]
    assert report.radar_axes({"fine": res["fine"]["mt_bench"]}) == ["turn1", "turn2", "category/x"]
    assert report.flatten({"m": {"t": {"a": 1.0}}}) == {"m/t/a": 1.0}


def test_report_logs_table_and_images_to_an_active_wandb_run(tmp_path, monkeypatch):
    import sys
    import types

    logged: list[dict] = []
    fake = types.SimpleNamespace(
        run=types.SimpleNamespace(log=logged.append),
        Table=lambda columns, data: ("table", columns, data),
        Image=lambda path: ("image", path),
    )
    monkeypatch.setitem(sys.modules, "wandb", fake)
    res = {"base": {"t": {"acc": 0.25}}, "instruct": {"t": {"acc": 0.5}}}
    meta = {"models": {m: {"chat": m == "instruct"} for m in res}, "seconds": {"x": 1.0}}
    files = report.write_report(tmp_path, res, meta, ["t"], [])
    (media,) = logged
    assert media["eval/report"] == (
        "table",
        ["task", "metric", "base", "instruct"],
        [["t", "acc", 0.25, 0.5]],
    )
    assert media["eval/key_metrics"] == ("image", str(files["key_metrics"]))
    assert "eval/mt_bench_radar" not in media  # no MT-Bench results, no radar


def test_torch_threads_are_restored():
    import torch

    from c2f_exp.evaluation.lineup import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
