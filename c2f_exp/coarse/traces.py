"""Trace files of the coarse stage: `length_trace.csv/.png` and `overoptimization.csv/.png`.

CSV columns are contracts: length_trace's first columns are docs/method.md §5's,
overoptimization's are `gold_monitor.COLUMNS`. matplotlib is imported inside (Agg backend),
only when plotting.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from c2f_exp.coarse.gold_monitor import COLUMNS as GOLD_COLUMNS
from c2f_exp.coarse.gold_monitor import curve_summary

TRACE_COLUMNS = ("step", "limit", "reward", "value", "gate", "truncation_rate")
TRACE_COLUMNS += ("mean_response_length", "kl", "entropy", "tokens_total", "tokens_per_s")


def _write_csv(path: Path, cols: Sequence[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(cols), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_trace(rows: list[dict], out: Path) -> None:
    """`length_trace.csv` (docs/method.md §5 columns first) and `length_trace.png`."""
    cols = list(TRACE_COLUMNS) + sorted({k for r in rows for k in r} - set(TRACE_COLUMNS))
    _write_csv(out / "length_trace.csv", cols, rows)
    plt = _pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(7, 7), sharex=True)
    panels = (("limit", "mean_response_length"), ("reward", "value"), ("gate", "truncation_rate"))
    for ax, keys in zip(axes, panels, strict=True):
        for k in keys:
            ax.plot([r["step"] for r in rows], [r.get(k) for r in rows], label=k)
        ax.legend(loc="best", fontsize=8)
    axes[-1].set_xlabel("PPO iteration")
    fig.suptitle("Coarse Actor: length limit and its gate")
    fig.tight_layout()
    fig.savefig(out / "length_trace.png", dpi=100)
    plt.close(fig)


def write_overoptimization(rows: list[dict], out: Path, stopped_at: int | None = None) -> None:
    """`overoptimization.csv` (one row per monitor step) and `overoptimization.png`.

    The plot is Gao et al. (2022)'s: RM score (left axis) and gold total (right axis) against the
    batch's mean KL from the reference; a second panel shows both against the PPO iteration, with
    the early stop (if any) marked.
    """
    _write_csv(out / "overoptimization.csv", GOLD_COLUMNS, rows)
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    panels = ((axes[0], "kl", "KL(policy || reference), nats per answer"),)
    for ax, x_key, label in (*panels, (axes[1], "step", "PPO iteration")):
        xs = [r[x_key] for r in rows]
        ax.plot(xs, [r["rm_score"] for r in rows], "o-", color="tab:blue", label="RM score")
        ax.set_xlabel(label)
        ax.set_ylabel("RM score", color="tab:blue")
        twin = ax.twinx()
        gold = [r["gold_total"] for r in rows]
        twin.plot(xs, gold, "s-", color="tab:orange", label="gold total")
        twin.set_ylabel("gold total per answer", color="tab:orange")
        if stopped_at is not None:
            ax.axvline(next(r[x_key] for r in rows if r["step"] == stopped_at), ls="--", c="k")
    rhos = [r["spearman"] for r in rows if not math.isnan(r["spearman"])]
    rho = f"mean Spearman(RM, gold) over rollouts {sum(rhos) / len(rhos):.2f}" if rhos else ""
    fig.suptitle(f"Overoptimization: RM score vs. gold reward. {rho}".strip())
    fig.tight_layout()
    fig.savefig(out / "overoptimization.png", dpi=100)
    plt.close(fig)


def write_traces(state: Any, out: Path, gold: bool) -> dict[str, Any]:
    """The coarse stage's trace files from a final `TrainState`: length_trace.csv/.png and, with
    the gold monitor on, overoptimization.csv/.png. Returns the monitor's curve summary
    (stage metrics; empty when it is off)."""
    write_trace(state.trace, out)
    if not gold:
        return {}
    write_overoptimization(state.gold, out, state.stopped_on_gold)
    return curve_summary(state.gold, state.stopped_on_gold)
