"""lm-eval on the tiny world's tasks with a tiny model; the offline data preflight."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from c2f_exp.core.errors import ConfigError
from c2f_exp.evaluation import harness
from c2f_exp.evaluation.tasks import materialise_tinyworld, process_about
from tests.helpers.eval import eval_cfg

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_materialised_tasks_use_absolute_paths(tiny_artifact, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # lm-eval would resolve relative paths from here
    dest = materialise_tinyworld(tiny_artifact, Path("rel"), ["tinyworld_mc", "tinyworld_about"])
    text = (dest / "tinyworld_mc.yaml").read_text()
    assert f'"test": "{(tmp_path / "rel" / "tinyworld_mc.jsonl").resolve()}"' in text
    assert (
        "process_results: !function utils.process_about"
        in (dest / "tinyworld_about.yaml").read_text()
    )
    row = json.loads((dest / "tinyworld_mc.jsonl").read_text().splitlines()[0])
    assert row["answers"][row["gold"]].endswith(f"{row['choices'][row['gold']]} .")
    with pytest.raises(ConfigError, match="unknown tiny-world task"):
        materialise_tinyworld(tiny_artifact, tmp_path / "x", ["tinyworld_nope"])


def test_about_metric_is_the_gold_scorer(tiny_artifact):
    from c2f_exp.tinyworld.world import World

    world = World.load(tiny_artifact / "world.json")
    e = world.entities[0]
    doc = {"entity": e, "world_path": str(tiny_artifact / "world.json")}
    good = f"{world.clause(e, 'color')} . {world.clause(e, 'diet')} . {world.clause(e, 'color')} ."
    m = process_about(doc, [good])
    assert (m["correct_facts"], m["wrong_facts"], m["frac_ge1_correct"]) == (2.0, 0.0, 1.0)
    assert m["repetition_rate"] == pytest.approx(1 / 3)
    assert m["gold_total"] == pytest.approx(2 - 0.25)


def test_lm_eval_runs_tiny_tasks_with_a_tiny_model(tiny_artifact, tmp_path):
    from c2f_exp.evaluation.lineup import ModelRef, load

    tasks = ["tinyworld_mc", "tinyworld_about"]
    dest = materialise_tinyworld(tiny_artifact, tmp_path / "tasks", tasks, max_gen_toks=8)
    tm = harness.task_manager(tasks, [str(dest)])
    assert "arc_easy" not in tm.task_index  # lm-eval's own tasks not indexed when unneeded
    lcfg = eval_cfg({"eval.lm_eval.limit": 3}).eval.lm_eval
    path = str(tiny_artifact / "base")
    model, tok = load(ModelRef("base", path, False, path), "float32", "cpu")
    res = harness.evaluate(model, tok, False, tasks, lcfg, tm, tmp_path / "samples")
    assert 0.0 <= res["tinyworld_mc"]["acc"] <= 1.0
    assert set(res["tinyworld_about"]) >= {"gold_total", "correct_facts", "repetition_rate"}
    rows = (tmp_path / "samples" / "tinyworld_about.jsonl").read_text().splitlines()
    assert len(rows) == 3
    args = json.loads(rows[0])["arguments"]
    assert "tell me about the" in str(args) and "[INST]" not in str(args)  # plain prompt
    chat = harness.evaluate(model, tok, True, ["tinyworld_about"], lcfg, tm, tmp_path / "chat")
    args = json.loads((tmp_path / "chat" / "tinyworld_about.jsonl").read_text().splitlines()[0])[
        "arguments"
    ]
    assert "[INST] tell me about the" in str(args) and "tinyworld_about" in chat


def test_parse_results_keeps_metrics_and_filters():
    raw = {
        "t": {
            "alias": "t",
            "acc,none": 0.5,
            "acc_stderr,none": 0.1,
            "exact_match,strict-match": 0.25,
            "sample_len": 10,
            "x,none": "N/A",
        }
    }
    assert harness.parse_results(raw) == {"t": {"acc": 0.5, "exact_match[strict-match]": 0.25}}


def _hub_task(dir_, name: str, dataset: str) -> None:
    dir_.mkdir(parents=True, exist_ok=True)
    (dir_ / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: {dataset}\noutput_type: multiple_choice\n"
        "test_split: test\ndoc_to_text: q\ndoc_to_choice: [a, b]\ndoc_to_target: 0\n"
    )


def test_offline_preflight_names_every_unreachable_task_in_one_line(tmp_path, monkeypatch):
    """All of them at once: finding 11 unreachable tasks used to take 11 runs."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _hub_task(tmp_path / "tasks", "my_hub_task", "nobody/c2f-missing-dataset")
    _hub_task(tmp_path / "tasks", "other_task", "nobody/c2f-other-missing")
    (tmp_path / "tasks" / "grp.yaml").write_text("group: my_group\ntask: [my_hub_task]\n")
    with pytest.raises(ConfigError) as err:
        harness.preflight_tasks(["my_group", "other_task"], [str(tmp_path / "tasks")])
    msg = str(err.value)
    assert "\n" not in msg and "2 task(s)" in msg and "HF_HUB_OFFLINE" in msg
    assert "'my_hub_task' (my_group) needs 'nobody/c2f-missing-dataset'" in msg
    assert "'other_task' (other_task) needs 'nobody/c2f-other-missing'" in msg


@pytest.mark.slow  # an unknown name needs lm-eval's full task index (~10 s)
def test_preflight_rejects_unknown_task(tmp_path):
    with pytest.raises(ConfigError, match="unknown lm-eval task 'no_such_task_c2f'"):
        harness.preflight_tasks(["no_such_task_c2f"], [])


def test_preflight_accepts_local_data_and_flags_missing_files(tmp_path):
    d = tmp_path / "tasks"
    d.mkdir()
    data = tmp_path / "d.jsonl"
    data.write_text('{"q": "x"}\n')
    for name, path in (("ok_task", data), ("bad_task", tmp_path / "missing.jsonl")):
        (d / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
            f"    test: {path}\noutput_type: multiple_choice\ntest_split: test\n"
            "doc_to_text: q\ndoc_to_choice: [a, b]\ndoc_to_target: 0\n"
        )
    harness.preflight_tasks(["ok_task", "tinyworld_mc"], [str(d)])
    with pytest.raises(ConfigError, match=r"task 'bad_task'.*missing\.jsonl, which does not"):
        harness.preflight_tasks(["bad_task"], [str(d)])
