"""Reward stage on a micro world built in-process: artifact, scoring contract, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from c2f_exp.core.errors import C2FError, ConfigError
from c2f_exp.reward import model as rmod
from c2f_exp.reward import preferences as prefs
from c2f_exp.reward.stage import RewardStage, score_texts
from tests.helpers import check
from tests.helpers.reward import SMALL, _cfg, _compose, _ctx, _jsonl, _micro_world, _run


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    return _micro_world(tmp_path_factory.mktemp("prep") / "p")


@pytest.fixture(scope="module")
def trained(micro, tmp_path_factory):
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("reward")
    cfg = _cfg(
        **SMALL, objective="process", defects={"enabled": True}, knowledge={"enabled": False}
    )
    return _run(cfg, tmp, micro)  # the process RM's own pooling (the knowledge head: its own test)


def test_stage_trains_and_writes_a_reward_model(trained):
    metrics, art = trained
    from transformers import AutoConfig

    conf = AutoConfig.from_pretrained(art / "model")
    assert conf.num_labels == 1 and conf.pad_token_id == 0
    assert conf.architectures == ["MistralForSequenceClassification"]
    assert getattr(conf, rmod.FORMAT_KEY) == "plain"
    assert metrics["trained"] and metrics["train_pairs"] > metrics["test_pairs"] > 0
    for k in ("test_accuracy", "test_accuracy_init", "gold_agreement"):
        assert 0 <= metrics[k] <= 1, k
    assert metrics["gold_pairs"] > 0 and (art / "model" / "model.safetensors").is_file()
    assert metrics["ppo_prompts_gold_pairs"] > 0  # the second fresh sample: PPO's entities
    assert rmod.reward_model_ref(art) == str(art / "model")


def test_training_fits_the_training_pairs(micro, tmp_path):
    pairs = [json.loads(x) for x in (micro / "data" / "preferences_train.jsonl").open()]
    model, tok = rmod.init_reward_model(str(micro / "base"), "plain", 0)
    before = rmod.pairwise_accuracy(model, tok, pairs, "plain")
    tcfg = _cfg(train={"epochs": 8, "batch_size": 4, "lr": 3e-3}).reward.train  # typed
    hist = rmod.train_reward_model(model, tok, pairs, "plain", tcfg, tmp_path, 0)
    after = rmod.pairwise_accuracy(model, tok, pairs, "plain")
    assert hist[-1]["train_loss"] < 0.6  # below log 2 = 0.69, the loss of a constant score
    assert after["accuracy"] >= 0.9 and after["margin"] > before["margin"] + 0.5


def _entities(prep: Path) -> list[str]:
    return json.loads((prep / "world.json").read_text())["entities"]


def test_score_texts_is_padding_invariant_and_reads_the_eos(micro, trained):
    _, art = trained
    model, tok = rmod.load_reward_model(str(art / "model"))
    x, y = _entities(micro)[:2]
    prompts = [f"tell me about the {x} .", f"tell me about the {y} ."]
    answers = [f"the {x} is colored red . the {x} walks on four legs .", f"the {y} moves slowly ."]
    batch = score_texts(model, tok, prompts, answers, batch_size=2)
    alone = torch.cat(
        [score_texts(model, tok, [p], [a]) for p, a in zip(prompts, answers, strict=True)]
    )
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-5)
    ids = rmod.encode(tok, prompts[1], answers[1], "plain")
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.decode(ids[1:-1]) == f"{prompts[1]} {answers[1]}"
    assert getattr(model.config, rmod.POOLING_KEY) == "sum"  # objective=process
    with torch.no_grad():
        per_token = model.score(model.model(input_ids=torch.tensor([ids])).last_hidden_state)
    assert batch[1].item() == pytest.approx(per_token.sum().item(), abs=1e-4)


def test_scoring_matches_trl_training_inputs(micro):
    """Oracle: TRL's preference collator + a last-token model give the scores `score_ids` gives."""
    from trl.trainer.reward_trainer import DataCollatorForPreference

    model, tok = rmod.init_reward_model(str(micro / "base"), "plain", 0, pooling="last")
    p = {
        "prompt": "tell me about the x .",
        "chosen": "the x is colored red . the x moves slowly .",
        "rejected": "the x is colored red .",
    }
    ex = {
        "chosen_ids": rmod.encode(tok, p["prompt"], p["chosen"], "plain"),
        "rejected_ids": rmod.encode(tok, p["prompt"], p["rejected"], "plain"),
    }
    batch = DataCollatorForPreference(pad_token_id=tok.pad_token_id)([ex])
    with torch.no_grad():
        trl_scores = model(**batch).logits[:, 0]
    ours = rmod.score_ids(model, [ex["chosen_ids"], ex["rejected_ids"]], tok.pad_token_id)
    torch.testing.assert_close(trl_scores, ours, atol=1e-5, rtol=1e-5)


def test_existing_compatible_reward_model_is_linked_not_trained(micro, trained, tmp_path):
    _, art = trained
    metrics, out = _run(_cfg(path=str(art / "model"), **SMALL), tmp_path, micro)
    assert metrics["trained"] is False and "train_seconds" not in metrics
    assert (out / "model").is_symlink() and (out / "model").resolve() == (art / "model").resolve()
    assert metrics["test_accuracy"] == pytest.approx(trained[0]["test_accuracy"])


def test_mismatched_vocabulary_is_a_named_one_line_error(micro, tmp_path):
    other = _micro_world(tmp_path / "other", seed=5, words=("zebra", "quokka"))
    model, tok = rmod.init_reward_model(str(other / "base"), "plain", 0)
    model.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    cfg = _cfg(path=str(tmp_path / "rm"), **SMALL)
    with pytest.raises(ConfigError) as e:  # found in run(), before any model is loaded
        RewardStage().run(_ctx(cfg, tmp_path, micro), tmp_path)
    msg = str(e.value)
    assert "reward.path=" in msg and "vocabulary" in msg and "\n" not in msg
    cfg.model.base.path = str(micro / "base")  # with a known policy path: found in preflight
    with pytest.raises(ConfigError, match="vocabulary that differs"):
        RewardStage().preflight(cfg)


def test_a_causal_lm_is_not_a_reward_model(micro, tmp_path):
    cfg = _cfg(path=str(micro / "base"), **SMALL)
    with pytest.raises(ConfigError, match="not a one-output sequence-classification"):
        RewardStage().run(_ctx(cfg, tmp_path, micro), tmp_path)


def test_pickle_only_or_truncated_reward_model_is_refused_at_preflight(trained, tmp_path):
    import shutil

    from safetensors.torch import load_file

    _, art = trained
    pickled, cut = tmp_path / "pickled", tmp_path / "cut"
    shutil.copytree(art / "model", pickled)
    weights = pickled / "model.safetensors"
    torch.save(load_file(weights), pickled / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(ConfigError, match=r"reward\.path=.*safetensors"):
        RewardStage().preflight(_cfg(path=str(pickled)))
    shutil.copytree(art / "model", cut)
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=r"reward\.path"):
        RewardStage().preflight(_cfg(path=str(cut)))


def test_missing_reward_model_path_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"reward\.path"):
        RewardStage().preflight(_cfg(path=str(tmp_path / "nope")))


def test_empty_preference_set_is_a_named_error(micro, tmp_path):
    prep = tmp_path / "p"
    import shutil

    shutil.copytree(micro, prep)
    (prep / "data" / "preferences_train.jsonl").write_text("")
    with pytest.raises(rmod.EmptyPreferenceSetError, match=r"preferences_train\.jsonl"):
        _run(_cfg(**SMALL), tmp_path, prep)
    assert issubclass(rmod.EmptyPreferenceSetError, C2FError)


def test_tinyworld_reward_needs_prepare(tmp_path):
    with pytest.raises(ConfigError, match="prepare"):
        RewardStage().run(_ctx(_cfg(), tmp_path, None), tmp_path)


def _sampled() -> prefs.Sampled:
    gold = torch.tensor([3.0, 1.0, 3.0, 0.0, 2.0, 0.5])  # two prompts x three samples
    return prefs.Sampled(["a"] * 3 + ["b"] * 3, [f"t{i}" for i in range(6)], gold, 3)


def test_gold_pairs_by_hand():
    pairs = prefs.gold_pairs(_sampled(), min_margin=1.0, margin_scale=0.5)
    # prompt a: (t0>t1, gap 2), t0=t2 skipped, (t2>t1, 2); prompt b: (t4>t3, 2), (t4>t5, 1.5),
    # (t5>t3, 0.5 < min_margin: dropped). margin = 0.5 * gap
    got = {(p["chosen"], p["rejected"], p["margin"]) for p in pairs}
    assert got == {("t0", "t1", 1.0), ("t2", "t1", 1.0), ("t4", "t3", 1.0), ("t4", "t5", 0.75)}


def test_gold_agreement_by_hand(monkeypatch):
    rewards = torch.tensor([1.0, 0.0, -1.0, 0.0, 0.0, 0.2])
    monkeypatch.setattr(prefs, "score_texts", lambda *a, **k: rewards)
    m = prefs.gold_agreement(None, None, _sampled())
    # pairs (i, j, gold gap): (0,1,+2) r diff +1 agree; (1,2,-2) r +1 disagree;
    # (3,4,-2) r tie: disagree; (3,5,-.5) r -.2 agree; (4,5,+1.5) r -.2 disagree
    assert m["gold_pairs"] == 5 and m["gold_agreement"] == pytest.approx(2 / 5)
    assert m["gold_agreement_gap1"] == pytest.approx(1 / 4)  # gaps >= 1: only (0,1) agrees


GOOD = json.dumps(
    {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"}
)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "has no rows"),
        ("\n\n", "has no rows"),
        (f"{GOOD}\n[1, 2]\n", "line 2 lacks or mistypes chosen, rejected"),
        ('{"chosen": "a"}\n', "line 1 lacks or mistypes rejected"),
        ('{"chosen": "a", "rejected": 3}\n', "line 1 lacks or mistypes rejected"),
        (f'{GOOD}\n\n{{"chosen": "a", "rej', "line 3 is not valid JSON ("),
        (  # no assistant turn: not an HH transcript
            '{"chosen": "Human: hi", "rejected": "\\n\\nHuman: a\\n\\nAssistant: b"}\n',
            "line 1 lacks or mistypes chosen (no '\\n\\nAssistant:')",
        ),
    ],
)
def test_a_malformed_hh_file_is_named_at_preflight(tmp_path, text, needle):
    f = tmp_path / "prefs.jsonl"
    f.write_text(text)
    with pytest.raises(ConfigError, match=r"^reward\.dataset=") as e:
        prefs.check_hh_file(str(f), "reward.dataset")
    assert needle in str(e.value) and '{"chosen": "...", "rejected": "..."}' in str(e.value)


def test_a_wellformed_hh_file_and_non_jsonl_refs_pass(tmp_path):
    f = tmp_path / "prefs.jsonl"
    f.write_text(GOOD[:-1] + ', "extra": 1}\n\n')
    prefs.check_hh_file(str(f), "reward.dataset")
    prefs.check_hh_file("Anthropic/hh-rlhf", "reward.dataset")  # a hub id: left to datasets
    prefs.check_hh_file(str(tmp_path), "reward.dataset")  # a directory: its files checked


def test_hh_transcripts_become_chat_pairs(tmp_path):
    conv = "\n\nHuman: hi there\n\nAssistant: hello\n\nHuman: tell me a joke\n\nAssistant: "
    rows = [
        {"chosen": conv + "a good one", "rejected": conv + "no"},
        {"chosen": "\n\nHuman: a\n\nHuman: b\n\nAssistant: c", "rejected": "x"},  # malformed
        {"chosen": conv + "same", "rejected": conv + "same"},
    ]  # no preference
    _jsonl(tmp_path / "hh.jsonl", rows)
    pairs = prefs.hh_pairs(str(tmp_path / "hh.jsonl"), "train", None)
    assert pairs == [
        {
            "prompt": [
                {"role": "user", "content": "hi there"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "tell me a joke"},
            ],
            "chosen": "a good one",
            "rejected": "no",
        }
    ]


def test_chat_encoding_uses_the_template(micro):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(micro / "base")
    tok.chat_template = "{{ bos_token }}{% for m in messages %} {{ m['content'] }}{% endfor %}"
    x = _entities(micro)[0]
    ids = rmod.encode(
        tok, [{"role": "user", "content": f"tell me about the {x} ."}], f"the {x} .", "chat"
    )
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.decode(ids[1:-1]) == f"tell me about the {x} . the {x} ."


def test_hh_rlhf_offline_fails_in_preflight(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = _cfg("hh_rlhf", ["+experiment=mistral_c2f"])
    assert cfg.reward.dataset == "Anthropic/hh-rlhf" and cfg.reward.format == "chat"
    with pytest.raises(ConfigError) as e:
        RewardStage().preflight(cfg)
    assert "reward.dataset" in str(e.value) and "hh-rlhf" in str(e.value)


@pytest.mark.parametrize(
    "over, needle",
    [
        ({"source": "web"}, "reward.source"),
        ({"format": "xml"}, "reward.format"),
        ({"init": "coarse"}, "reward.init"),
    ],
)
def test_bad_reward_choices_are_named_at_composition(over, needle):
    """Choice fields (enums) fail where the value is merged in, as on the command line."""
    from c2f_exp.cli_errors import one_line

    with pytest.raises(Exception) as e:
        _compose(**over)
    msg = one_line(e.value)
    assert msg is not None and msg.startswith(f"{needle} must be one of") and "\n" not in msg


@pytest.mark.parametrize(
    "over, needle",
    [
        ({"train": {"lr": 0.0}}, "reward.train.lr must be > 0"),
        ({"train": {"batch_size": 0}}, "reward.train.batch_size must be > 0"),
        ({"gold": {"samples_per_prompt": 1}}, "reward.gold.samples_per_prompt"),
        (
            {
                "source": "hub",
                "dataset": None,
                "gold": {"enabled": False},
                "onpolicy": {"enabled": False},
                "knowledge": {"enabled": False},  # else named first: the group's own rule
            },
            "reward.dataset",
        ),
        ({"source": "hub", "dataset": "x/y"}, "reward.gold.enabled"),
    ],
)
def test_bad_reward_values_are_named(over, needle):
    with pytest.raises(ConfigError) as e:
        check(_compose(**over))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_tiny_reward_with_hub_models_is_refused():
    with pytest.raises(ConfigError, match=r"reward\.source"):
        check(_compose("tinyworld", ["+experiment=mistral_c2f"]))
