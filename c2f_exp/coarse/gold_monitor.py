"""Overoptimization monitor math: rank correlation, moving averages, the early-stop rule.

Gao, Schulman & Hilton (2022), *Scaling Laws for Reward Model Overoptimization*: as the policy
moves away from its reference (KL grows), the proxy reward model's score keeps rising while the
gold reward first rises, then falls. Every `coarse.gold_every` iterations the coarse stage scores
the batch's rollouts with both; these pure functions turn the per-rollout scores into one row of
`overoptimization.csv` and decide whether to stop (`coarse.early_stop_on_gold`).
Orchestration (decoding, the gold sources): c2f_exp/coarse/gold_rewards.py; plot: coarse/traces.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

COLUMNS = ("step", "kl", "rm_score", "gold_total", "spearman", "n")
COLUMNS += ("gold_facts", "gold_explained", "gold_wrong", "gold_repeats", "gold_unparsed")
COUNTS = {"correct": "gold_facts", "explained": "gold_explained"}  # gold source key -> column
COUNTS.update(wrong="gold_wrong", repeats="gold_repeats", unparsed="gold_unparsed")


def rankdata(xs: Sequence[float]) -> list[float]:
    """Ranks 1..n of `xs`; ties share their average rank (scipy's rankdata, method='average')."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1  # average of ranks i+1 .. j+1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson correlation of the (tie-averaged) ranks. NaN when undefined.

    rho = cov(rank x, rank y) / (sd(rank x) * sd(rank y)); undefined (NaN) for fewer than two
    pairs or a constant input.
    """
    if len(x) != len(y):
        raise ValueError(f"spearman needs equal lengths (got {len(x)} and {len(y)})")
    if len(x) < 2:
        return math.nan
    rx, ry = rankdata(x), rankdata(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else math.nan


def moving_average(xs: Sequence[float], window: int) -> list[float]:
    """Trailing means over full windows: out[i] = mean(xs[i : i + window]); len n - window + 1."""
    return [sum(xs[i : i + window]) / window for i in range(len(xs) - window + 1)]


def overoptimized(
    gold: Sequence[float], rm: Sequence[float], window: int, min_drop: float
) -> bool:
    """The early-stop rule, judged at the latest monitor point.

    With G = moving_average(gold, window), R = moving_average(rm, window) (full windows only),
    j = the first index of max(G) and k = the last index:

        stop  iff  k > j  and  G[j] - G[k] > min_drop  and  R[k] > R[j]

    i.e. the smoothed gold total has fallen by more than `min_drop` from its best while the
    smoothed reward-model score is higher than it was at that best (Gao et al. 2022's signature
    of overoptimization). Needs at least window + 1 points.
    """
    g, r = moving_average(gold, window), moving_average(rm, window)
    if len(g) < 2:
        return False
    j = max(range(len(g)), key=lambda i: (g[i], -i))  # first best
    k = len(g) - 1
    return k > j and g[j] - g[k] > min_drop and r[k] > r[j]


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def monitor_row(
    step: int, kl: Sequence[float], rm: Sequence[float], gold: dict[str, Sequence[float]]
) -> dict[str, float]:
    """One row of `overoptimization.csv` from per-rollout values of one batch.

    Args:
        kl: (B,) summed per-token KL from the reference of each rollout; rm: (B,) reward-model
            scores; gold: per-rollout gold values, "total" required, and the COUNTS keys
            ("correct", "explained", ...) where the source counts facts (the tiny world's).
    Returns:
        {column: value} for COLUMNS; counts a source does not give are NaN.
    """
    total = list(gold["total"])
    row = {"step": step, "kl": _mean(kl), "rm_score": _mean(rm), "gold_total": _mean(total)}
    row.update(spearman=spearman(list(rm), total), n=len(total))
    for key, col in COUNTS.items():
        row[col] = _mean(gold[key]) if key in gold else math.nan
    return row


def curve_summary(rows: Sequence[dict], stopped_at: int | None) -> dict[str, float | int | None]:
    """Stage metrics of the monitor's curve: where gold and RM peaked, where they ended."""
    if not rows:
        return {"gold_points": 0}
    best_gold = max(rows, key=lambda r: r["gold_total"])
    best_rm = max(rows, key=lambda r: r["rm_score"])
    rhos = [r["spearman"] for r in rows if not math.isnan(r["spearman"])]
    return {
        "gold_points": len(rows),
        "gold_peak_step": best_gold["step"],
        "gold_peak_total": best_gold["gold_total"],
        "rm_peak_step": best_rm["step"],
        "gold_final_total": rows[-1]["gold_total"],
        "rm_final_score": rows[-1]["rm_score"],
        "gold_rm_spearman_mean": _mean(rhos),
        "stopped_on_gold_at": stopped_at,
    }
