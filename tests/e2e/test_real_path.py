"""`+experiment=mistral_c2f` on real formats (issue 22): each defect a new user hit, a test.

Stand-ins (tests/helpers/realformat.py): Mistral-7B-v0.1's real config.json and real tokenizer
(no pad token), the instruct partner's [INST] chat template, HH-RLHF JSONL in the layouts users
have. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.cli import run_inprocess
from tests.helpers.realformat import mistral_dir, write_hh


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("real")
    return {
        "base": str(mistral_dir(root / "Mistral-7B-v0.1")),
        "instruct": str(mistral_dir(root / "Mistral-7B-Instruct-v0.2", instruct=True)),
        "hh": str(write_hh("split_dir", root / "hh")),
    }


def user_paths(real: dict) -> list[str]:
    """The README's local-path overrides for the 7B recipe."""
    return [
        "+experiment=mistral_c2f",
        f"model.base.path={real['base']}",
        f"model.instruct.path={real['instruct']}",
        f"data.hub.preference_dataset={real['hh']}",
        f"data.hub.prompt_dataset={real['hh']}",
    ]


def test_every_stage_key_resolves_on_the_7b_recipe(conf, real):
    """reward.dataset is `${data.hub.preference_dataset}`: the reward stage's cache key used to
    be built in a new config root, where that interpolation could not resolve."""
    from c2f_exp.pipeline import registry

    cfg = conf(user_paths(real))  # typed, as the pipeline hands it to the stages
    for name, stage in registry().items():
        sub = stage.config_subtree(cfg)
        json.dumps(sub, default=str)  # plain values all the way down
        if name == "reward":
            assert sub["reward"]["dataset"] == real["hh"]


def test_distributed_enters_the_keys_of_trained_stages(conf, real):
    """A zero3 Coarse Actor or reward model is not reused for a one-process run (and back)."""
    from c2f_exp.pipeline import registry

    one = conf([*user_paths(real), "distributed=none"])
    z3 = conf(user_paths(real))  # the recipe's default: zero3
    stages = registry()
    for name in ("reward", "coarse"):
        assert stages[name].config_subtree(one) != stages[name].config_subtree(z3), name
        assert "distributed" not in stages[name].config_subtree(one)  # tiny keys unchanged
    for name in ("merge", "eval"):
        assert stages[name].config_subtree(one) == stages[name].config_subtree(z3), name


def test_the_policy_tokenizer_gets_a_pad_token(real):
    """Mistral's tokenizer has no pad token; rollouts left-pad prompts with one."""
    from c2f_exp.coarse.rollout import encode_prompts
    from c2f_exp.core.tokenizers import load_tokenizer

    tok = load_tokenizer(real["base"], "left")
    assert tok.pad_token == "<unk>" and tok.pad_token_id == 0 and tok.eos_token_id == 2
    ids, mask = encode_prompts(tok, ["Hi", "\n\nHuman: a much longer prompt\n\nAssistant:"])
    assert ids.shape == mask.shape and int(mask[0, 0]) == 0 and int(ids[0, 0]) == 0


def test_saved_tokenizers_keep_their_class_and_padding_side(real, tmp_path):
    """The Coarse Actor's and reward model's tokenizers load as the base model's did."""
    from transformers import AutoTokenizer

    from c2f_exp.core.tokenizers import load_tokenizer, save_tokenizer

    tok = load_tokenizer(real["base"], "left")
    save_tokenizer(tok, tmp_path / "actor")
    cfg = json.loads((tmp_path / "actor" / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "LlamaTokenizer" and cfg["padding_side"] == "left"
    again = AutoTokenizer.from_pretrained(tmp_path / "actor")
    assert again.padding_side == "left"
    assert again("Hello world").input_ids == tok("Hello world").input_ids


def test_no_gpu_stops_at_preflight_in_one_line(real, tmp_path, capsys):
    """The recipe's default distributed=zero3 on a machine without a GPU: exit 2, one line
    naming `distributed` and both fixes (was a DeepSpeed mpi4py traceback mid-run)."""
    code, _, err = run_inprocess(user_paths(real), tmp_path, capsys)
    assert code == 2
    line = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "distributed=zero3" in line[0] and "distributed=none" in line[0]
    assert "GPU node" in line[0] and not (tmp_path / "cache").exists()


def test_ranks_to_start():
    from omegaconf import OmegaConf

    from c2f_exp.launch import ranks_to_start

    d = {"name": "zero3", "backend": "deepspeed", "num_processes": 8, "cpu": False}
    cfg = OmegaConf.create({"distributed": d, "stages": ["prepare", "reward", "coarse"]})
    assert ranks_to_start(cfg, gpus=4) == 4  # one per visible GPU
    cfg.distributed.cpu, cfg.distributed.num_processes = True, 2
    assert ranks_to_start(cfg, gpus=0) == 2
    none = OmegaConf.create({"distributed": {**d, "backend": "none"}, "stages": ["coarse"]})
    assert ranks_to_start(none, gpus=4) == 0
    evals = OmegaConf.create({"distributed": d, "stages": ["merge", "eval"]})
    assert ranks_to_start(evals, gpus=4) == 0  # nothing that trains across ranks


def test_under_a_launcher_ranks_are_not_started_again(monkeypatch):
    from omegaconf import OmegaConf

    from c2f_exp.launch import ranks_to_start

    monkeypatch.setenv("LOCAL_RANK", "0")
    d = {"name": "zero3", "backend": "deepspeed", "num_processes": 8, "cpu": False}
    assert ranks_to_start(OmegaConf.create({"distributed": d, "stages": ["coarse"]}), 0) == 0


def test_plan_prints_sizes_and_memory_without_training(real, tmp_path, capsys):
    """`plan=true`: Mistral-7B's exact parameter count from its config.json (nothing loaded),
    rows, token budgets, and per-GPU memory equal to DeepSpeed's estimator run by hand."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    code, out, _ = run_inprocess([*user_paths(real), "plan=true"], tmp_path, capsys)
    assert code == 0 and not (tmp_path / "cache").exists()  # nothing built
    plan = json.loads(out[out.index("{") :])
    assert plan["models"]["base"]["params"] == 7_241_732_096  # Mistral-7B-v0.1
    assert plan["distributed"].startswith("zero3 (8 GPUs")
    _, gpu, _ = estimate_zero3_model_states_mem_needs(
        7_241_732_096, 32000 * 4096, num_gpus_per_node=8, cpu_offload=False
    )
    assert plan["reward"]["gpu_gib"] == round(gpu / 1024**3, 1)
    assert plan["reward"]["train_rows"] == 36  # the stand-in's train split
    c = plan["coarse"]
    assert c["params_trained"] == 2 * 7_241_732_096 and c["generated_tokens_max"] > 0
    assert c["gpu_gib"]["total"] > c["gpu_gib"]["model_states (DeepSpeed estimator)"] > 0


def test_rm_judge_calibrates_on_hub_pairs_and_hh_transcripts(compose, real):
    """Hub runs have no tiny-world preferences_test.jsonl: the reward-model judge calibrates on
    the reward data's test pairs; an HH calibration file (no `prompt` field) is read too."""
    from c2f_exp.evaluation.judges import calibration_convs
    from c2f_exp.evaluation.stage import _calibration_pairs

    cfg = compose([*user_paths(real), "eval.mt_bench.judge.type=reward_model"])
    pairs = _calibration_pairs(cfg, None)
    assert pairs and all(isinstance(p["prompt"], list) for p in pairs)
    convs = calibration_convs(pairs)
    assert len(convs) == 2 * len(pairs) and convs[0][-1]["role"] == "assistant"
    hh = [json.loads(x) for x in (Path(real["hh"]) / "test.jsonl").read_text().splitlines()]
    convs = calibration_convs(hh)
    assert len(convs) == 2 * len(hh) and convs[0][0] == {
        "role": "user",
        "content": convs[0][0]["content"],
    }


def test_rm_judge_with_an_api_model_name_stops_at_preflight(compose, real):
    from c2f_exp.core.errors import ConfigError
    from c2f_exp.evaluation import judges

    cfg = compose([*user_paths(real), "eval.mt_bench.judge.type=reward_model"])
    with pytest.raises(ConfigError, match=r"judge\.model=gpt-4 with judge\.type=reward_model"):
        judges.preflight(cfg.eval.mt_bench.judge, list(cfg.stages))


def test_more_than_half_failed_judgments_is_an_error(tmp_path, caplog):
    """With judge.type=hf_local all 32 judgments once failed and the run exited 0 silently."""
    from c2f_exp.core.errors import C2FError
    from c2f_exp.evaluation.mt_bench import check_failures

    rows = [{"score": -1}] * 3 + [{"score": 5.0}]
    with pytest.raises(C2FError, match="3 of 4 MT-Bench judgments by j failed"):
        check_failures(rows, "j", tmp_path / "j.jsonl")
    check_failures([{"score": -1}, {"score": 4.0}, {"score": 6.0}], "j", tmp_path / "j.jsonl")
    assert "1 of 3 MT-Bench judgments by j failed" in caplog.text


def test_one_file_data_set_holds_out_a_test_slice(real, tmp_path):
    """A single file used to give the same rows as train and test."""
    from c2f_exp.reward.preferences import hh_pairs

    f = write_hh("one_file", tmp_path / "hh")
    train, test = hh_pairs(str(f), "train", None), hh_pairs(str(f), "test", None)
    assert len(test) == 48 // 10 and len(train) == 48 - 48 // 10
    assert not {json.dumps(p) for p in train} & {json.dumps(p) for p in test}


def test_hub_clone_layout_gives_its_splits(tmp_path):
    from c2f_exp.reward.preferences import hh_pairs

    d = write_hh("hub_clone", tmp_path / "hh")
    assert len(hh_pairs(str(d), "train", None)) == 36 and len(hh_pairs(str(d), "test", None)) == 12


def test_rollouts_and_answers_stop_at_the_turn_marker(real):
    """A base model that writes the user's next turn has ended its reply."""
    import torch

    from c2f_exp.coarse.rollout import _sample_loop, stop_sequences
    from c2f_exp.core.tokenizers import load_tokenizer

    tok = load_tokenizer(real["base"], "left")
    stops = stop_sequences(tok, "\n\nHuman:")
    assert stops and all(tok.decode(s).strip() == "Human:" for s in stops)
    script = tok("Sure, here.", add_special_tokens=False).input_ids + stops[0] + [5, 6, 7]

    class Scripted:  # logits that sample `script` token by token
        def __init__(self):
            self.t = 0
            self.prefill_logits = self._logits()

        def _logits(self):
            x = torch.full((1, 32000), -1e9)
            x[0, script[min(self.t, len(script) - 1)]] = 0.0
            return x

        def step(self, _):
            self.t += 1
            return self._logits()

    toks, alive, done, _ = _sample_loop(Scripted(), 40, 2, 0, 1.0, 0, True, False, stops)
    n = int(alive.sum())
    assert bool(done[0]) and n == len(script) - 3  # stopped right after the marker
    assert tok.decode(toks[0, :n].tolist()).endswith("Human:")


def test_base_prompts_in_eval_use_the_ppo_transcript_format(real):
    from c2f_exp.core.tokenizers import load_tokenizer
    from c2f_exp.evaluation.mt_bench import render

    tok = load_tokenizer(real["base"], "left")
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    ids = render(tok, [*msgs, {"role": "user", "content": "More?"}], chat=False, transcript=True)
    text = tok.decode(ids)
    assert ids[0] == tok.bos_token_id
    assert text.endswith("Human: Hi\n\nAssistant: Hello\n\nHuman: More?\n\nAssistant:")


def test_a_prompt_longer_than_the_context_is_named_at_preflight(compose, real, tmp_path):
    from c2f_exp.core.errors import ConfigError
    from c2f_exp.sources import HubSource

    short = mistral_dir(tmp_path / "short-context")
    conf = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps({**conf, "max_position_embeddings": 1100}))
    f = tmp_path / "prompts.jsonl"
    rows = [
        {
            "chosen": f"\n\nHuman: {'word ' * n}\n\nAssistant: ok",
            "rejected": f"\n\nHuman: {'word ' * n}\n\nAssistant: no",
        }
        for n in (400, 3, 3)  # one file: its last row is held out as the test split
    ]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    over = [f"model.base.path={short}", f"data.hub.prompt_dataset={f}"]
    cfg = compose([*user_paths(real), *over])  # l_max 1024: room for 76 prompt tokens
    with pytest.raises(ConfigError, match=r"prompt 0 has \d+ tokens.*context of 1100"):
        HubSource().check_prompts(cfg)
    HubSource().check_prompts(compose(user_paths(real)))  # 32k context: fine


def test_hub_clone_rows_without_an_assistant_turn_are_named(tmp_path):
    import gzip

    from c2f_exp.core.errors import ConfigError
    from c2f_exp.reward.preferences import check_hh_file

    d = write_hh("hub_clone", tmp_path / "hh")
    check_hh_file(str(d), "data.hub.preference_dataset")
    with gzip.open(d / "helpful-base" / "test.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"chosen": "Human: hi", "rejected": "\n\nAssistant: x"}) + "\n")
    with pytest.raises(ConfigError, match=r"test\.jsonl\.gz line 1 lacks or mistypes chosen"):
        check_hh_file(str(d), "data.hub.preference_dataset")


def test_base_and_instruct_of_different_architectures_are_named(compose, real, tmp_path):
    from c2f_exp.core.errors import ConfigError
    from c2f_exp.core.tokenizers import check_pair

    other = mistral_dir(tmp_path / "other", instruct=True)
    conf = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**conf, "vocab_size": 32768}))
    cfg = compose(user_paths(real))
    with pytest.raises(ConfigError, match=r"has vocab_size=32768 but model\.base\.path"):
        check_pair({"base": real["base"], "instruct": str(other)}, cfg)
    plain = mistral_dir(tmp_path / "no-template")  # an instruct model without a chat template
    with pytest.raises(ConfigError, match="has no chat template"):
        check_pair({"base": real["base"], "instruct": str(plain)}, cfg)
    tcfg = json.loads((plain / "tokenizer_config.json").read_text())
    tcfg.pop("eos_token")
    (plain / "tokenizer_config.json").write_text(json.dumps(tcfg))
    conf = json.loads((plain / "config.json").read_text())
    conf.pop("eos_token_id")
    (plain / "config.json").write_text(json.dumps(conf))
    (plain / "special_tokens_map.json").unlink()
    with pytest.raises(ConfigError, match="the tokenizer has no EOS token"):
        check_pair({"base": str(plain)}, cfg)


def test_distributed_without_a_launcher_starts_ranks_itself(tmp_path):
    """`python -m c2f_exp ... distributed=ddp` (no torchrun / accelerate launch around it)
    starts `num_processes` ranks through torch's elastic launch (gloo on CPU with
    distributed.cpu=true), every rank in the job's run dir: here the rehearsal's prepare and a
    reward model trained data-parallel over 2 ranks; rank 0 writes the manifest."""
    from tests.conftest import read_manifest, run_cli
    from tests.helpers.realformat import rehearsal_env, rehearsal_inputs

    args, server = rehearsal_inputs(tmp_path)
    server.close()
    args += [
        "stages=[prepare,reward]",
        "distributed=ddp",
        "distributed.cpu=true",
        "distributed.num_processes=2",
    ]
    proc = run_cli(args, tmp_path, env=rehearsal_env(), timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "starting 2 ranks" in proc.stdout + proc.stderr
    logs = sorted((tmp_path / "run" / "ranks").rglob("*.log"))
    ranks = {p.parent.name for p in logs}  # torch elastic: one folder per local rank
    assert len(ranks) == 2, logs
    m = read_manifest(tmp_path)
    assert [(s["stage"], s["status"]) for s in m["stages"]] == [
        ("prepare", "done"),
        ("reward", "done"),
    ]
    assert m["stages"][1]["metrics"]["trained"]


def test_sigterm_to_the_self_launching_parent_stops_every_rank(tmp_path):
    """SLURM's time limit reaches the process that started the ranks: the ranks stop (rank 0
    marks its manifest failed) and the parent prints one line and exits 143."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT
    from tests.helpers.realformat import rehearsal_env, rehearsal_inputs

    args, server = rehearsal_inputs(tmp_path)
    server.close()
    cmd = [sys.executable, "-m", "c2f_exp", f"hydra.run.dir={tmp_path}/run",
           f"paths.cache_dir={tmp_path}/cache", *args, "stages=[prepare,reward]",
           "distributed=ddp", "distributed.cpu=true", "distributed.num_processes=2"]  # fmt: skip
    env = {**os.environ, **rehearsal_env(), "TQDM_DISABLE": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    manifest = tmp_path / "run" / "manifest.json"
    for _ in range(600):  # rank 0's pipeline has started once its manifest exists
        if manifest.is_file() or proc.poll() is not None:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    lines = [x for x in err.decode().splitlines() if x.startswith("error:")]
    assert lines and "interrupted by SIGTERM" in lines[-1]
    for _ in range(50):  # the ranks' own exits are asynchronous to the parent's
        if json.loads(manifest.read_text())["status"] != "running":
            break
        time.sleep(0.1)
    assert json.loads(manifest.read_text())["status"] == "failed"


def test_a_malformed_rm_judge_calibration_file_is_named_at_preflight(compose, real, tmp_path):
    """Before: a calibration file without the expected fields failed after every answer was
    generated."""
    from c2f_exp.core.errors import ConfigError
    from c2f_exp.evaluation import judges

    bad = tmp_path / "cal.jsonl"
    bad.write_text(json.dumps({"chosen": "\n\nHuman: q\n\nAssistant: a"}) + "\n")
    cfg = compose(
        [
            *user_paths(real),
            "eval.mt_bench.judge.type=reward_model",
            "eval.mt_bench.judge.model=null",
            "eval.mt_bench.judge.base_url=null",
            f"eval.mt_bench.judge.calibration_file={bad}",
        ]
    )
    with pytest.raises(ConfigError, match=r"calibration_file=.*line 1 lacks or mistypes rejected"):
        judges.preflight(cfg.eval.mt_bench.judge, list(cfg.stages))
    good = tmp_path / "hh.jsonl"
    good.write_text((Path(real["hh"]) / "test.jsonl").read_text())
    cfg.eval.mt_bench.judge.calibration_file = str(good)
    judges.preflight(cfg.eval.mt_bench.judge, list(cfg.stages))  # HH rows, no prompt: fine
