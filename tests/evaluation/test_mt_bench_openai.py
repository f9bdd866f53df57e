"""The `openai_compatible` judge end to end against a real HTTP server on 127.0.0.1.

The server (a thread, port 0) speaks the chat-completions API and returns canned judgments
chosen by a marker in the graded answer: good, flaky (HTTP 500 first), malformed once, never
rated. It records every request, so the tests check headers, bodies and retries.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from c2f_exp.core.errors import ConfigError
from c2f_exp.evaluation import judges, mt_bench, mt_bench_data
from c2f_exp.evaluation.clients import OpenAICompatibleClient
from tests.helpers.eval import _prompts, eval_cfg
from tests.helpers.judge_server import KEY, KEY_ENV, JudgeServer

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def server():
    s = JudgeServer()
    yield s
    s.close()


def _jcfg(url: str, **kw):
    over = {
        "type": "openai_compatible",
        "model": "judge-model",
        "base_url": url,
        "api_key_env": KEY_ENV,
        "retries": 2,
        "retry_backoff_s": 0.01,
        **kw,
    }
    return eval_cfg({f"eval.mt_bench.judge.{k}": v for k, v in over.items()}).eval.mt_bench.judge


def _answer(qid: int, turns: list[str]) -> dict:
    return {
        "question_id": qid,
        "answer_id": "x",
        "model_id": "m",
        "tstamp": 0.0,
        "choices": [{"index": 0, "turns": turns}],
    }


def test_judging_end_to_end_over_http(server, monkeypatch, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # httpx/httpcore debug logs included
    monkeypatch.setenv(KEY_ENV, KEY)
    judge = judges.build(_jcfg(server.url, parallel=2), _prompts(), None, {})
    questions = [
        {"question_id": 1, "category": "writing", "turns": ["w1", "w2"]},
        {"question_id": 2, "category": "math", "turns": ["m1", "m2"]},
    ]
    answers = {
        "m": [
            _answer(1, ["MARK-GOOD", "MARK-MALFORMED"]),
            _answer(2, ["MARK-FLAKY", "MARK-NEVER"]),
        ]
    }
    rows = mt_bench.judge_answers(judge, questions, answers, {2: ["ref one", "ref two"]})
    got = {(r["question_id"], r["turn"]): r for r in rows}
    assert {k: r["score"] for k, r in got.items()} == {
        (1, 1): 8.0,
        (1, 2): 7.0,
        (2, 1): 6.0,
        (2, 2): -1.0,
    }
    assert got[(1, 2)]["attempts"] == 2 and got[(2, 2)]["attempts"] == 3
    assert got[(2, 1)]["judge"] == ["judge-model", "single-math-v1"]
    assert "REF: ref one" in got[(2, 1)]["user_prompt"]
    assert got[(1, 2)]["judge"] == ["judge-model", "single-v1-multi-turn"]
    posts = [r for r in server.requests if r["path"] == "/v1/chat/completions"]
    assert len(posts) == 1 + 2 + 2 + 3  # good, malformed x2, flaky (500 + ok), never x3
    assert all(r["auth"] == f"Bearer {KEY}" for r in posts)
    body = posts[0]["body"]
    assert body["model"] == "judge-model" and body["messages"][0]["role"] == "system"
    temps = sorted(r["body"]["temperature"] for r in posts)
    assert temps.count(0.0) == 5 and temps.count(0.7) == 3  # first asks, then re-asks
    summary = mt_bench.summarise(rows, questions)["m"]
    assert summary["failed"] == 1 and summary["average"] == pytest.approx(7.0)
    out = tmp_path / "model_judgment" / f"{judge.name}_single.jsonl"
    mt_bench_data.write_jsonl(out, rows)
    assert KEY not in out.read_text() and KEY not in repr(judge.client)
    assert "no [[rating]]" in caplog.text and KEY not in caplog.text


def test_key_errors_name_the_variable_not_the_key(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match=f"environment variable {KEY_ENV} is not set"):
        judges.build(_jcfg(server.url), _prompts(), None, {})
    monkeypatch.setenv(KEY_ENV, "sk-wrong-key")
    client = OpenAICompatibleClient(server.url, "judge-model", KEY_ENV)
    with pytest.raises(ConfigError, match=f"refused the key in \\${KEY_ENV}") as err:
        client.complete([{"role": "user", "content": "x"}], 0.0, 8)
    assert "sk-wrong-key" not in str(err.value)


def test_preflight_reaches_the_server(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    judges.preflight(_jcfg(server.url), ["eval"])
    dead = JudgeServer()
    url = dead.url
    dead.close()
    with pytest.raises(ConfigError, match=r"cannot reach judge server .*base_url"):
        judges.preflight(_jcfg(url), ["eval"])


def test_eval_stage_with_http_judge(server, monkeypatch, tmp_path, tiny_artifact):
    """The stage end to end: tiny models answer, the HTTP judge grades, the report is written."""
    from c2f_exp.evaluation.stage import EvalStage
    from tests.helpers.eval import make_ctx

    monkeypatch.setenv(KEY_ENV, KEY)
    prompts = tmp_path / "judge_prompts.jsonl"
    mt_bench_data.write_jsonl(prompts, list(_prompts().values()))
    over = {
        "eval.lm_eval.tasks": [],
        "eval.mt_bench.limit": 3,
        "eval.mt_bench.max_new_tokens": 4,
        "eval.mt_bench.judge_prompts_file": str(prompts),
        **{
            f"eval.mt_bench.judge.{k}": v
            for k, v in (
                ("type", "openai_compatible"),
                ("model", "judge-model"),
                ("base_url", server.url),
                ("api_key_env", KEY_ENV),
            )
        },
    }
    cfg = eval_cfg(over)
    stage = EvalStage()
    stage.preflight(cfg)
    ctx, out = make_ctx(cfg, tiny_artifact, tmp_path)
    metrics = stage.run(ctx, out)
    assert metrics["base/mt_bench/average"] == pytest.approx(8.0)
    assert metrics["instruct/mt_bench/turn2"] == pytest.approx(8.0)
    judged = mt_bench_data.read_jsonl(
        out / "mt_bench" / "model_judgment" / "judge-model_single.jsonl"
    )
    assert len(judged) == 2 * 3 * 2 and len(server.requests) == 12
    assert Path(ctx.stage_dir / "report.md").is_file()
