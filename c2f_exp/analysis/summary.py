"""One job's headline numbers under stable names, read from its manifest.json.

The same extraction feeds wandb summaries (`final/<name>`) and `python -m c2f_exp.compare`, so a
dashboard panel and a compare.csv column of the same name always hold the same number.

Which model the headline describes: the last of fine > coarse > instruct > base that the eval
stage scored; without an eval stage, the Coarse Actor as the coarse stage's own gold check
measured it (greedy answers to held-out animals). `coarse_*` columns always come from the
coarse stage, so a merge sweep can say how much of the Coarse Actor's facts the Fine Actor kept.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

EVAL_ORDER = ("fine", "coarse", "instruct", "base")
NOT_LM_EVAL = ("mt_bench", "text_stats")  # eval metric groups that are not lm-eval tasks
# headline name -> (eval key under <model>/, coarse-stage key under actor/heldout_)
GOLD = {
    "facts": ("tinyworld_about/correct_facts", "facts_per_answer"),
    "gold_total": ("tinyworld_about/gold_total", "gold_total_per_answer"),
    "repetition": ("tinyworld_about/repetition_rate", "repetition_rate"),
    "explanations": ("tinyworld_about/explained", "explained_per_answer"),
    "wrong": ("tinyworld_about/wrong_facts", "wrong_per_answer"),
    "eos_rate": ("text_stats/eos_rate", "eos_rate"),
    "mean_tokens": ("text_stats/mean_tokens", "mean_new_tokens"),
}
COARSE = {  # coarse-stage metric -> headline name
    "final_reward": "reward",
    "final_limit": "final_limit",
    "tokens_generated": "tokens",
    "steps": "coarse_steps",
    "actor/heldout_facts_per_answer": "coarse_facts",
    "actor/heldout_gold_total_per_answer": "coarse_gold_total",
    "actor/heldout_repetition_rate": "coarse_repetition",
    "base/heldout_facts_per_answer": "base_facts",
}
REWARD = {"gold_agreement": "rm_agreement", "ppo_prompts_gold_agreement": "rm_agreement_ppo"}
# The columns compare.md shows (compare.csv has every headline key).
TABLE = (
    "model", "facts", "gold_total", "repetition", "explanations", "mt_bench", "lm_eval_acc",
    "coarse_facts", "reward", "final_limit", "tokens",
)  # fmt: skip


def number(v: Any) -> float | None:
    """`v` as a float if it is a number (bools are not), else None."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def ends(name: str, value: Any) -> dict[str, int | float]:
    """`{name}_first`, `{name}_last` of a number or a list of numbers (else {}): a per-layer λ
    `[0.5, 1.5]` plots on a numeric axis as lambda_first=0.5, lambda_last=1.5 (a scalar λ:
    both equal it, so one panel shows a sweep mixing both forms)."""
    seq = isinstance(value, Sequence) and not isinstance(value, str)
    vals = list(value) if seq else [value]  # lists, tuples, OmegaConf's ListConfig
    if not vals or any(number(v) is None for v in vals):
        return {}
    return {f"{name}_first": vals[0], f"{name}_last": vals[-1]}


def _eval_model(metrics: dict[str, Any]) -> str | None:
    models = {k.split("/", 1)[0] for k in metrics if "/" in k}
    return next((m for m in EVAL_ORDER if m in models), None)


def headline(manifest: dict[str, Any]) -> dict[str, Any]:
    """Stable-named numbers of one run: gold metrics, MT-Bench, lm-eval, tokens, seconds."""
    by_stage = {s["stage"]: s for s in manifest.get("stages", [])}
    out: dict[str, Any] = {}
    for stage, s in by_stage.items():
        out[f"seconds_{stage}"] = s.get("seconds")
        out[f"status_{stage}"] = s.get("status")
    coarse = by_stage.get("coarse", {}).get("metrics", {})
    for key, name in COARSE.items():
        out[name] = number(coarse.get(key))
    reward = by_stage.get("reward", {}).get("metrics", {})
    for key, name in REWARD.items():
        out[name] = number(reward.get(key))
    ev = by_stage.get("eval", {}).get("metrics", {})
    model = _eval_model(ev)
    if model is not None:
        out["model"] = model
        for name, (key, _) in GOLD.items():
            out[name] = number(ev.get(f"{model}/{key}"))
        out["mt_bench"] = number(ev.get(f"{model}/mt_bench/average"))
        accs = [
            number(v)
            for k, v in ev.items()
            if k.startswith(f"{model}/") and k.endswith("/acc")
            and k.split("/")[1] not in NOT_LM_EVAL
        ]  # fmt: skip
        accs = [a for a in accs if a is not None]
        out["lm_eval_acc"] = sum(accs) / len(accs) if accs else None
    elif coarse:
        out["model"] = "coarse"
        for name, (_, key) in GOLD.items():
            out[name] = number(coarse.get(f"actor/heldout_{key}"))
    return {k: v for k, v in out.items() if v is not None}


def eval_table(manifest: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The eval stage's metrics as (columns, rows): one row per model, one column per metric."""
    ev = next((s["metrics"] for s in manifest.get("stages", []) if s["stage"] == "eval"), {})
    per_model: dict[str, dict[str, Any]] = {}
    for k, v in ev.items():
        if "/" in k and number(v) is not None:
            model, metric = k.split("/", 1)
            per_model.setdefault(model, {})[metric] = v
    metrics = sorted({m for row in per_model.values() for m in row})
    rows = [[model, *(row.get(m) for m in metrics)] for model, row in per_model.items()]
    return ["model", *metrics], rows


# -- statistics over the jobs of a sweep (compare.py tables, analysis/plots.py error bars) -----
SEED_KEYS = ("seed",)


def groups(flat: list[dict[str, Any]], params: list[str]) -> dict[tuple, list[dict]]:
    """Finished rows grouped by the swept values other than seeds."""
    keys = [p for p in params if p not in SEED_KEYS]
    out: dict[tuple, list[dict]] = {}
    for d in flat:
        if d["status"] == "done":
            out.setdefault(tuple(d.get(k) for k in keys), []).append(d)
    return out


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (0 for one value)."""
    m = statistics.fmean(values)
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return m, se
