"""Plots for `python -m c2f_exp.compare`: metrics against each swept parameter.

One figure per swept parameter (seeds excluded: they become error bars, mean ± s.e.), one
panel per metric, one line per combination of the other swept parameters. Numeric parameters
(λ, growth rate) get a numeric axis; others (schedule names, filters, per-layer λ lists) a
categorical one. `compare_tokens.png` puts gold facts against generated tokens per configuration
(equal-budget schedule ablations: do the schedules reach more facts for the same tokens?).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from c2f_exp.analysis.summary import SEED_KEYS, groups, mean_se, number

METRICS = (
    ("facts", "gold facts / answer"),
    ("gold_total", "gold total / answer"),
    ("repetition", "repetition rate"),
    ("final_limit", "final length limit"),
    ("mt_bench", "MT-Bench average"),
)


def _as_float(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _series(flat: list[dict], params: list[str], x: str, metric: str) -> dict[tuple, list]:
    """(other params' values) -> [(x value, mean, se), ...] over finished jobs."""
    keys = [p for p in params if p not in SEED_KEYS]
    ix = keys.index(x)
    out: dict[tuple, list] = {}
    for key, ds in groups(flat, params).items():
        vals = [d[metric] for d in ds if number(d.get(metric)) is not None]
        if vals:
            other = key[:ix] + key[ix + 1 :]
            out.setdefault(other, []).append((key[ix], *mean_se(vals)))
    return out


def plot_param(flat: list[dict], params: list[str], x: str, out: Path) -> Path | None:
    """`compare_<x>.png`: each metric that varies against swept parameter `x`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [p for p in params if p not in SEED_KEYS and p != x]
    metrics = [(m, lab) for m, lab in METRICS if len({d.get(m) for d in flat}) > 1]
    if not metrics:
        return None
    numeric = all(_as_float(d.get(x)) is not None for d in flat if d.get(x) is not None)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    # categorical axis (schedules, lists of per-layer λ): numbers first, in order, then the rest
    vals = list(dict.fromkeys(d.get(x) for d in flat))
    cats = [str(v) for v in sorted((v for v in vals if _as_float(v) is not None), key=_as_float)]
    cats += [str(v) for v in vals if _as_float(v) is None]
    for ax, (m, label) in zip(axes[0], metrics, strict=True):
        for other, pts in _series(flat, params, x, m).items():
            pos = _as_float if numeric else (lambda v: cats.index(str(v)))
            pts.sort(key=lambda p: pos(p[0]))
            name = ", ".join(f"{k}={v}" for k, v in zip(others, other, strict=True)) or None
            line = [p for p in pts if _as_float(p[0]) is not None]  # joined by a line
            dots = [p for p in pts if _as_float(p[0]) is None]  # categories: markers only
            color = None
            for part, style in ((line, "-"), (dots, "none")):
                if part:
                    eb = ax.errorbar([pos(p[0]) for p in part], [p[1] for p in part],
                                     yerr=[p[2] for p in part], marker="o", capsize=3,
                                     linestyle=style, color=color, label=name)  # fmt: skip
                    color, name = eb[0].get_color(), None
        if not numeric:
            ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right", fontsize=8)
        ax.set_xlabel(x)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if others:
        axes[0][0].legend(fontsize=7)
    seeds = any(p in SEED_KEYS for p in params)
    fig.suptitle(f"metrics vs {x}" + (" (mean ± s.e. over seeds)" if seeds else ""))
    fig.tight_layout()
    path = out / f"compare_{x}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_tokens(flat: list[dict], params: list[str], out: Path) -> Path | None:
    """`compare_tokens.png`: gold facts against generated tokens, a colour per configuration."""
    pts = [d for d in flat if None not in (number(d.get("tokens")), number(d.get("facts")))]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [p for p in params if p not in SEED_KEYS]
    fig, ax = plt.subplots(figsize=(6, 4))
    by: dict[str, list[dict]] = {}
    for d in pts:
        by.setdefault(", ".join(f"{k}={d.get(k)}" for k in keys) or "run", []).append(d)
    for name, ds in by.items():
        ax.scatter([d["tokens"] for d in ds], [d["facts"] for d in ds], label=name, alpha=0.8)
    ax.set_xlabel("generated rollout tokens")
    ax.set_ylabel("gold facts / answer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "compare_tokens.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(flat: list[dict[str, Any]], params: list[str], out: Path) -> list[Path]:
    """Every plot that the swept parameters and the available metrics allow."""
    paths = [plot_param(flat, params, x, out) for x in params if x not in SEED_KEYS]
    paths.append(plot_tokens(flat, params, out))
    return [p for p in paths if p is not None]
