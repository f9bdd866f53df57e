"""Quality checks of the tiny models against the gold scorer (reported in manifest.json)."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from c2f_exp.tinyworld.scorer import GoldScorer


@torch.no_grad()
def sequence_logprobs(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, texts: list[str], batch_size: int = 64
) -> torch.Tensor:
    """Sum of token log-probs of each text after BOS. Returns (N,)."""
    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        enc = [
            [tok.bos_token_id, *tok(t, add_special_tokens=False).input_ids]
            for t in texts[i : i + batch_size]
        ]
        width = max(map(len, enc))
        ids = torch.full((len(enc), width), tok.pad_token_id)
        mask = torch.zeros((len(enc), width), dtype=torch.long)
        for j, e in enumerate(enc):  # right padding: positions stay aligned with training
            ids[j, : len(e)] = torch.tensor(e)
            mask[j, : len(e)] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        out.append((lp * mask[:, 1:]).sum(-1))
    return torch.cat(out)


def fact_preference(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, pairs: list[dict]
) -> float:
    """Fraction of pairs where the true statement is more likely than the false one."""
    lp_true = sequence_logprobs(model, tok, [p["true"] for p in pairs])
    lp_false = sequence_logprobs(model, tok, [p["false"] for p in pairs])
    return (lp_true > lp_false).float().mean().item()


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    chat: bool,
    batch_size: int = 64,
    do_sample: bool = False,
) -> list[tuple[str, bool, int]]:
    """Generate for each prompt. Returns (text, ended_with_eos, n_new_tokens) per prompt.

    `chat=True` wraps the prompt with the tokenizer's chat template (instruct models).
    """
    model.eval()
    results = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        if chat:
            texts = [
                tok.apply_chat_template(
                    [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
                )
                for p in chunk
            ]
            enc = tok(texts, add_special_tokens=False, return_tensors="pt", padding=True)
        else:
            texts = [f"{tok.bos_token} {p}" for p in chunk]
            enc = tok(texts, add_special_tokens=False, return_tensors="pt", padding=True)
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        new = out[:, enc.input_ids.shape[1] :]
        for row in new:
            eos_at = (row == tok.eos_token_id).nonzero()
            n = int(eos_at[0]) + 1 if len(eos_at) else len(row)
            results.append((tok.decode(row[:n], skip_special_tokens=True), bool(len(eos_at)), n))
    return results


def answer_quality(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    scorer: GoldScorer,
    rows: list[dict],
    max_new_tokens: int,
    chat: bool,
) -> dict[str, float]:
    """Gold-scorer statistics of greedy answers to `rows` ({"prompt", "entity"})."""
    outs = generate(model, tok, [r["prompt"] for r in rows], max_new_tokens, chat)
    scores = [scorer.score(text, r["entity"]) for (text, _, _), r in zip(outs, rows, strict=True)]
    n = max(1, len(rows))
    return {
        "n": len(rows),
        "frac_ge1_correct": sum(s.correct >= 1 for s in scores) / n,
        "eos_rate": sum(e for _, e, _ in outs) / n,
        "facts_per_answer": sum(s.correct for s in scores) / n,
        "wrong_per_answer": sum(s.wrong for s in scores) / n,
        "explained_per_answer": sum(s.explained for s in scores) / n,
        "gold_total_per_answer": sum(s.total() for s in scores) / n,  # what the RM approximates
        "repetition_rate": sum(s.repetition_rate for s in scores) / n,
        "mean_new_tokens": sum(k for _, _, k in outs) / n,
    }
