"""End-to-end: prepare under debug=micro, reuse, force, offline failure, CLI errors."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest

from tests.conftest import read_manifest, run_cli

MICRO = ["debug=micro", "tracker=none"]


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("micro")
    proc = run_cli(MICRO, tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp


def test_prepare_micro_end_to_end(micro_run):
    m = read_manifest(micro_run)
    stages = [s["stage"] for s in m["stages"]]
    assert stages == ["prepare", "reward", "coarse", "merge", "eval"]  # the default: all
    entry = m["stages"][0]
    assert entry["status"] == "done"
    art = Path(entry["path"])
    assert (art / "DONE").is_file() and (art / "result.json").is_file()
    for role in ("base", "instruct"):
        files = {p.name for p in (art / role).iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= files, files
        assert not any(f.endswith((".bin", ".pt")) for f in files)
    for name in (
        "corpus.txt",
        "sft_train.jsonl",
        "preferences_train.jsonl",
        "ppo_prompts.jsonl",
        "two_turn.jsonl",
        "mc_questions.jsonl",
        "fact_pairs_heldout.jsonl",
    ):
        assert (art / "data" / name).stat().st_size > 0, name
    metrics = entry["metrics"]
    for k in (
        "base/heldout_fact_preference",
        "instruct/heldout_frac_ge1_correct",
        "instruct/heldout_eos_rate",
        "targets_met",
    ):
        assert k in metrics
    assert isinstance(metrics["torch_threads"], int) and metrics["torch_threads"] >= 1
    assert 0.0 <= metrics["base/heldout_fact_preference"] <= 1.0
    lines = (micro_run / "run" / "prepare" / "metrics.jsonl").read_text().splitlines()
    assert any("pretrain/loss" in json.loads(x) for x in lines)
    assert not list(art.parent.glob(".tmp-*")), "temp dirs left behind"


ROLES = ["base", "instruct", "coarse", "fine"]


def test_default_run_writes_eval_report(micro_run):
    manifest = read_manifest(micro_run)
    ev = manifest["stages"][-1]
    assert ev["status"] == "done"
    report = (micro_run / "run" / "eval" / "report.md").read_text().splitlines()
    header = next(x for x in report if x.startswith("| task | metric |"))
    assert header == "| task | metric | " + " | ".join(ROLES) + " |"  # one column per model
    rows = [x for x in report if x.startswith("| tinyworld_about | gold_total |")]
    assert len(rows) == 1 and len(rows[0].strip("|").split("|")) == 2 + len(ROLES)
    results = json.loads((micro_run / "run" / "eval" / "results.json").read_text())
    assert list(results["results"]) == list(results["models"]) == ROLES
    art = {s["stage"]: Path(s["path"]) for s in manifest["stages"]}
    # every model evaluated is the one the run produced, and the manifest names the same dirs
    produced = {
        "base": art["prepare"] / "base",
        "instruct": art["prepare"] / "instruct",
        "coarse": art["coarse"] / "actor",
        "fine": art["merge"],
    }
    assert {r: Path(m["path"]) for r, m in results["models"].items()} == produced
    models = {r: Path(d) for s in manifest["stages"] for r, d in s["models"].items()}
    assert {r: models[r] for r in ROLES} == produced
    assert models["reward"] == art["reward"] / "model"
    for role in ROLES:
        assert "gold_total" in results["results"][role]["tinyworld_about"], role
    assert (art["coarse"] / "actor" / "model.safetensors").is_file()
    assert (art["coarse"] / "length_trace.csv").is_file()
    assert (art["merge"] / "merge_recipe.json").is_file()


def test_micro_length_limit_grows_under_continuous_max(micro_run):
    """debug=micro exercises a limit that moves (l_min 8, multiple 1, rate 2: conf/debug)."""
    lines = (micro_run / "run" / "coarse" / "metrics.jsonl").read_text().splitlines()
    steps = [r for r in map(json.loads, lines) if "next_limit" in r]
    assert len(steps) == 3  # coarse.steps under micro
    limits = [steps[0]["limit"], *(r["next_limit"] for r in steps)]
    assert limits[0] == 8 and limits == sorted(limits) and max(limits) <= 16
    assert limits[-1] > 8, limits  # it grew
    assert all(r["limit"] == prev["next_limit"] for prev, r in itertools.pairwise(steps))


def test_standalone_merge_cli(micro_run, tmp_path):
    art = Path(read_manifest(micro_run)["stages"][0]["path"])
    args = [
        "stages=[merge]",
        "tracker=none",
        f"merger.base={art / 'base'}",
        f"merger.instruct={art / 'instruct'}",
        f"merger.coarse={art / 'instruct'}",
        "merger.coefficient=0.5",
    ]
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (entry,) = read_manifest(tmp_path)["stages"]
    assert (Path(entry["path"]) / "merge_recipe.json").is_file()
    bad = run_cli([*args[:-1], "merger.coefficient=[0.1,0.2,0.3]"], tmp_path / "bad")
    assert bad.returncode == 2 and "merger.coefficient" in bad.stderr


def test_trained_models_load_and_generate(micro_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    art = Path(read_manifest(micro_run)["stages"][0]["path"])
    tok = AutoTokenizer.from_pretrained(art / "instruct")
    model = AutoModelForCausalLM.from_pretrained(art / "instruct")
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "tell me about the x ."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]


def test_unchanged_stage_is_reused_and_force_recomputes(micro_run, tmp_path):
    first = read_manifest(micro_run)["stages"][0]
    cache = Path(first["path"]).parents[1]
    proc = run_cli([*MICRO, f"paths.cache_dir={cache}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = read_manifest(tmp_path)["stages"][0]
    assert again["status"] == "reused"
    assert again["path"] == first["path"] and again["metrics"] == first["metrics"]
    assert (tmp_path / "run" / "prepare" / "metrics.jsonl").is_file()

    changed = tmp_path / "changed"
    proc = run_cli([*MICRO, f"paths.cache_dir={cache}", "data.world.seed=5"], changed)
    assert proc.returncode == 0, proc.stderr[-2000:]
    other = read_manifest(changed)["stages"][0]
    assert other["status"] == "done" and other["config_hash"] != first["config_hash"]

    forced = tmp_path / "forced"
    proc = run_cli([*MICRO, f"paths.cache_dir={cache}", "force=true"], forced)
    assert proc.returncode == 0, proc.stderr[-2000:]
    f = read_manifest(forced)["stages"][0]
    assert f["status"] == "done" and f["path"] == first["path"]


@pytest.mark.slow  # default suite < 10 min on 2 cores; run with -m slow
def test_same_seed_gives_identical_data_files(micro_run, tmp_path):
    """The prepare stage's data files are a pure function of the config."""
    first = Path(read_manifest(micro_run)["stages"][0]["path"])
    proc = run_cli([*MICRO, "model.pretrain.steps=1", "model.sft.steps=1"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    second = Path(read_manifest(tmp_path)["stages"][0]["path"])
    assert second != first
    for f in sorted((first / "data").iterdir()):
        assert f.read_bytes() == (second / "data" / f.name).read_bytes(), f.name
    assert (first / "world.json").read_bytes() == (second / "world.json").read_bytes()


def test_mistral_offline_fails_fast_with_named_model(tmp_path):
    # A closed local port stands in for the unreachable hub: real client, real failure.
    env = {
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "0",
    }
    t0 = time.time()
    args = ["+experiment=mistral_c2f", "distributed=none", "tracker=none"]  # no GPU here
    proc = run_cli(args, tmp_path, env=env, timeout=120)
    elapsed = time.time() - t0
    assert proc.returncode == 2
    err = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(err) == 1, proc.stderr[-2000:]
    assert "mistralai/Mistral-7B-v0.1" in err[0] and "model.base.path=" in err[0]
    assert "Traceback" not in proc.stderr
    assert elapsed < 30, elapsed
    assert not (tmp_path / "cache").exists()  # failed before any stage ran


def test_hub_offline_env_is_respected(tmp_path, monkeypatch):
    from c2f_exp.core.errors import ConfigError
    from c2f_exp.core.hub import resolve_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=r"org/some-model.*model\.base\.path"):
        resolve_model("org/some-model", "model.base.path")


def test_local_model_path_checks(tmp_path):
    from c2f_exp.core.errors import ConfigError
    from c2f_exp.core.hub import resolve_model

    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"), "model.base.path")
    with pytest.raises(ConfigError, match=r"without config\.json"):
        resolve_model(str(tmp_path), "model.base.path")


def test_bad_value_cli_one_line_error(tmp_path):
    proc = run_cli(["tracker=none", "stages=[prepare,bogus]"], tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: stages[1] must be one of")
    assert "Traceback" not in proc.stderr


GOLDEN = Path(__file__).with_name("golden_micro.json")


def _golden_numbers(run: Path) -> dict[str, float]:
    """The micro run's deterministic numbers: every pretraining and SFT loss (pure math on
    seeded data, so CPU-kernel noise stays ~1e-6) and the base model's held-out true-vs-false
    preference. Sampled stages (reward pairs, PPO) are left out: sampling amplifies any noise."""
    rows = [json.loads(x) for x in (run / "prepare" / "metrics.jsonl").read_text().splitlines()]
    out = {}
    for r in rows:
        for k in ("pretrain/loss", "sft/loss"):
            if k in r:
                out[f"{k}@{r['step']}"] = r[k]
    m = json.loads((run / "manifest.json").read_text())["stages"][0]["metrics"]
    out["base/heldout_fact_preference"] = m["base/heldout_fact_preference"]
    return out


def test_golden_micro_numbers(micro_run):
    """Fails when a dependency change moves the numbers (refresh, after re-measuring
    docs/results.md on the new stack: C2F_REFRESH_GOLDEN=1 pytest tests/e2e/test_pipeline.py
    -k golden). The file records the stack it was made with; constraints.txt pins that stack."""
    import os

    from c2f_exp.core.versions import stack_versions

    assert read_manifest(micro_run)["stack"] == stack_versions()  # every manifest says
    now = _golden_numbers(micro_run / "run")
    if os.environ.get("C2F_REFRESH_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps({"stack": stack_versions(), "numbers": now}, indent=1))
    gold = json.loads(GOLDEN.read_text())
    moved = {
        k: (v, now.get(k))
        for k, v in gold["numbers"].items()
        if now.get(k) is None or abs(now[k] - v) > 1e-4 * max(1.0, abs(v))
    }
    changed = {
        k: (v, stack_versions().get(k))
        for k, v in gold["stack"].items()
        if stack_versions().get(k) != v
    }
    assert not moved, (
        f"debug=micro numbers moved ({len(moved)} of {len(gold['numbers'])}, e.g. "
        f"{dict(list(moved.items())[:3])}); stack changes since the golden file: {changed}. "
        "Re-measure docs/results.md on this stack, then refresh (see this test's docstring)"
    )
