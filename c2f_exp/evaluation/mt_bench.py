"""MT-Bench: two-turn answers, judging and scores, in FastChat's llm_judge layout.

Data resolution (questions, judge prompts, references) is in mt_bench_data.py. Outputs, readable
by FastChat's `show_result.py --input-file <judgment file>`:
  mt_bench/model_answer/<model>.jsonl          {question_id, answer_id, model_id, choices, tstamp}
  mt_bench/model_judgment/<judge>_single.jsonl {question_id, model, judge, user_prompt, judgment,
                                                score, turn, tstamp}
Answers also record, per turn, whether generation ended with EOS and how many tokens it took
(`choices[0].eos`, `choices[0].new_tokens`) for the text statistics; FastChat ignores them.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from c2f_exp.evaluation.mt_bench_data import write_jsonl
from c2f_exp.evaluation.verdicts import Judge, Match

if TYPE_CHECKING:
    from c2f_exp.evaluation.config import MTBenchConf

log = logging.getLogger(__name__)


def render(
    tok: Any, messages: list[dict[str, str]], chat: bool, transcript: bool = False
) -> list[int]:
    """Token ids of a conversation ready for the next assistant turn.

    chat: the tokenizer's chat template (it adds BOS itself); transcript: BOS and the HH-RLHF
    transcript PPO trained on ("\n\nHuman: q\n\nAssistant:", hub data); else the turns joined
    by blank lines after BOS, as a base model continues text (tiny world: "<s> tell me about
    the X .").
    """
    if chat:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tok(text, add_special_tokens=False).input_ids
    if transcript:
        from c2f_exp.sources import hh_transcript

        return tok(hh_transcript(messages)).input_ids
    return tok("\n\n".join(m["content"] for m in messages)).input_ids


def _eos_ids(model: Any, tok: Any) -> set[int]:
    ids = getattr(model.generation_config, "eos_token_id", None) or tok.eos_token_id
    return set(ids if isinstance(ids, list) else [ids])


def generate(
    model: Any,
    tok: Any,
    prompts: list[list[int]],
    temperature: float,
    max_new_tokens: int,
    seed: int,
    stop: str | None = None,
) -> list[tuple[str, bool, int]]:
    """Left-padded batch generation. Returns (text, ended, new_tokens) per prompt; a row ends
    at EOS or at `stop` (a turn marker: the text is cut before it)."""
    import torch

    limit = getattr(model.config, "max_position_embeddings", None)
    keep = limit - max_new_tokens if limit and limit > max_new_tokens else None
    prompts = [p[-keep:] if keep else p for p in prompts]
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    eos = _eos_ids(model, tok)
    sample = (
        {"do_sample": True, "temperature": temperature}
        if temperature > 0
        else {"do_sample": False}
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids.to(model.device),
            attention_mask=mask.to(model.device),
            max_new_tokens=max_new_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=sorted(eos),
            **({"stop_strings": [stop], "tokenizer": tok} if stop else {}),
            **sample,
        )
    results = []
    for row in out[:, width:].tolist():
        n = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        text = tok.decode(row[:n], skip_special_tokens=True)
        ended = row[n - 1] in eos
        if stop and stop in text:  # the model went on to write the next turn itself
            text, ended = text.split(stop)[0], True
        results.append((text.strip(), ended, n))
    return results


def answer_questions(
    model: Any,
    tok: Any,
    name: str,
    questions: list[dict],
    chat: bool,
    mcfg: MTBenchConf,
    seed: int = 0,
) -> list[dict]:
    """Two-turn answers (turn 2 sees turn 1's answer) at FastChat's per-category temperature."""
    temps = {
        q["question_id"]: mcfg.temperatures.get(q["category"], mcfg.default_temperature)
        for q in questions
    }
    from c2f_exp.sources import get_source

    src = get_source(mcfg.source, "eval.mt_bench.source")
    marker = None if chat else src.turn_marker  # hub: HH transcripts
    turns: dict[int, list[tuple[str, bool, int]]] = {q["question_id"]: [] for q in questions}
    n_turns = max(len(q["turns"]) for q in questions)
    for t in range(n_turns):
        todo = [q for q in questions if len(q["turns"]) > t]
        for temp in sorted({temps[q["question_id"]] for q in todo}):
            group = [q for q in todo if temps[q["question_id"]] == temp]
            for i in range(0, len(group), mcfg.batch_size):
                batch = group[i : i + mcfg.batch_size]
                prompts = []
                for q in batch:
                    msgs = []
                    for k in range(t):
                        msgs += [
                            {"role": "user", "content": q["turns"][k]},
                            {"role": "assistant", "content": turns[q["question_id"]][k][0]},
                        ]
                    msgs.append({"role": "user", "content": q["turns"][t]})
                    prompts.append(render(tok, msgs, chat, transcript=marker is not None))
                seed_b = seed + 1000 * t + i
                outs = generate(model, tok, prompts, temp, mcfg.max_new_tokens, seed_b, marker)
                for q, o in zip(batch, outs, strict=True):
                    turns[q["question_id"]].append(o)
    return [
        {
            "question_id": q["question_id"],
            "answer_id": uuid.uuid4().hex[:22],
            "model_id": name,
            "tstamp": time.time(),
            "choices": [
                {
                    "index": 0,
                    "turns": [o[0] for o in turns[q["question_id"]]],
                    "eos": [o[1] for o in turns[q["question_id"]]],
                    "new_tokens": [o[2] for o in turns[q["question_id"]]],
                }
            ],
        }
        for q in questions
    ]


def judge_answers(
    judge: Judge,
    questions: list[dict],
    answers: dict[str, list[dict]],
    references: dict[int, list[str]],
) -> list[dict]:
    """Grade every turn of every model's answers. Returns FastChat judgment rows."""
    by_id = {q["question_id"]: q for q in questions}
    keys, matches = [], []
    for model, rows in answers.items():
        for a in rows:
            q = by_id[a["question_id"]]
            for turn in range(1, len(q["turns"]) + 1):
                keys.append((model, q["question_id"], turn))
                matches.append(
                    Match(q, a["choices"][0]["turns"], turn, references.get(q["question_id"]))
                )
    t0 = time.time()
    judged = judge.judge_many(matches)
    log.info("judged %d turns with %s in %.1fs", len(matches), judge.name, time.time() - t0)
    return [
        {
            "question_id": qid,
            "model": model,
            "judge": [judge.name, j.prompt_name],
            "user_prompt": j.user_prompt,
            "judgment": j.judgment,
            "score": j.score,
            "turn": turn,
            "attempts": j.attempts,
            "tstamp": time.time(),
        }
        for (model, qid, turn), j in zip(keys, judged, strict=True)
    ]


def summarise(judgments: list[dict], questions: list[dict]) -> dict[str, dict[str, float]]:
    """Per model: turn1, turn2, average (show_result's means, failed judgments excluded),
    failed, and the per-category average `category/<name>`."""
    cat = {q["question_id"]: q["category"] for q in questions}
    out: dict[str, dict[str, float]] = {}
    for model in dict.fromkeys(j["model"] for j in judgments):
        rows = [j for j in judgments if j["model"] == model]
        ok = [j for j in rows if j["score"] != -1]
        res = {"failed": float(len(rows) - len(ok))}
        for key, sel in [
            ("turn1", [j for j in ok if j["turn"] == 1]),
            ("turn2", [j for j in ok if j["turn"] == 2]),
            ("average", ok),
        ]:
            if sel:
                res[key] = sum(j["score"] for j in sel) / len(sel)
        for c in dict.fromkeys(cat[j["question_id"]] for j in ok):
            sel = [j["score"] for j in ok if cat[j["question_id"]] == c]
            res[f"category/{c}"] = sum(sel) / len(sel)
        out[model] = res
    return out


def grade(
    judge: Judge, data: Any, answers: dict[str, list[dict]], out: Path
) -> dict[str, dict[str, float]]:
    """Judge every answer, write `<out>/model_judgment/<judge>_single.jsonl`, return summaries."""
    rows = judge_answers(judge, data.questions, answers, data.references)
    path = out / "model_judgment" / f"{judge.name}_single.jsonl"
    write_jsonl(path, rows)
    check_failures(rows, judge.name, path)
    return summarise(rows, data.questions)


def check_failures(rows: list[dict], judge: str, path: Path) -> None:
    """A judgment without a score counts as failed (`failed` in the summary); a warning names
    how many, and more than half failed is an error: an average over the few that worked would
    be reported as if it were the model's score."""
    from c2f_exp.core.errors import C2FError

    failed = sum(r["score"] == -1 for r in rows)
    if not failed:
        return
    what = f"{failed} of {len(rows)} MT-Bench judgments by {judge} failed (no rating)"
    if failed * 2 > len(rows):
        raise C2FError(
            f"{what}; the judgments are in {path}: check eval.mt_bench.judge (model, server, "
            "prompt format) before trusting any MT-Bench number"
        )
    log.warning("%s; averages leave them out (%s)", what, path)


def answer_text_stats(rows: list[dict], repetition_n: int = 3) -> dict[str, float]:
    """Text statistics over every turn of one model's answers."""
    from c2f_exp.evaluation.text_stats import text_stats

    ch = [a["choices"][0] for a in rows]
    return text_stats(
        [t for c in ch for t in c["turns"]],
        [x for c in ch for x in c["eos"]],
        [k for c in ch for k in c["new_tokens"]],
        repetition_n,
    )
