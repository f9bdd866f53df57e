"""The C2F report: `results.json`, `report.md` (side-by-side table), PNG plots (docs/method.md §5).

`results` is `{model: {task: {metric: value}}}`; tasks are lm-eval task names, `mt_bench` and
`text_stats`. The table's columns are base | instruct | coarse | fine (those present), then any
other model; its rows are the configured lm-eval tasks (not every subtask of a group), MT-Bench
and the text statistics.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from c2f_exp.core.artifacts import write_json_atomic
from c2f_exp.evaluation.lineup import ordered

log = logging.getLogger(__name__)
Results = dict[str, dict[str, dict[str, float]]]
TEXT_KEYS = (
    "mean_tokens",
    "mean_words",
    "eos_rate",
    "distinct_1",
    "distinct_2",
    "repetition_rate",
    "compression_ratio",
)


def flatten(results: Results) -> dict[str, float]:
    """{"<model>/<task>/<metric>": value} for trackers."""
    return {
        f"{m}/{t}/{k}": v
        for m, tasks in results.items()
        for t, row in tasks.items()
        for k, v in row.items()
    }


def table_rows(results: Results, tasks: list[str]) -> list[tuple[str, str]]:
    """(task, metric) rows: configured lm-eval tasks, then mt_bench, then text_stats."""
    rows: list[tuple[str, str]] = []
    for task in [*tasks, "mt_bench", "text_stats"]:
        metrics: dict[str, None] = {}
        for model in results.values():
            metrics.update(dict.fromkeys(model.get(task, {})))
        if task == "mt_bench":
            metrics = dict.fromkeys(
                k for k in ("turn1", "turn2", "average", "failed") if k in metrics
            )
        elif task == "text_stats":
            metrics = dict.fromkeys(k for k in TEXT_KEYS if k in metrics)
        rows += [(task, m) for m in metrics]
    return rows


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.0f}" if float(v).is_integer() and abs(v) >= 10 else f"{v:.3f}"


def markdown_table(results: Results, rows: list[tuple[str, str]]) -> str:
    models = ordered(list(results))
    lines = ["| task | metric | " + " | ".join(models) + " |", "|---|---|" + "---:|" * len(models)]
    for task, metric in rows:
        vals = [_fmt(results[m].get(task, {}).get(metric)) for m in models]
        lines.append(f"| {task} | {metric} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def key_metrics(results: Results, wanted: list[str], tasks: list[str]) -> list[tuple[str, str]]:
    """`task/metric` pairs for the bar chart: configured, else one per task + MT-Bench + text."""
    pairs = [tuple(k.rsplit("/", 1)) for k in wanted] if wanted else []
    if not pairs:
        for task in tasks:
            first = next((next(iter(r[task])) for r in results.values() if r.get(task)), None)
            if first:
                pairs.append((task, first))
        pairs += [
            ("mt_bench", "average"),
            ("text_stats", "mean_tokens"),
            ("text_stats", "distinct_2"),
            ("text_stats", "repetition_rate"),
        ]
    return [(t, m) for t, m in pairs if any(m in r.get(t, {}) for r in results.values())]


def plot_bars(results: Results, pairs: list[tuple[str, str]], path: Path) -> Path | None:
    """One panel per key metric, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not pairs:
        return None
    models = ordered(list(results))
    cols = min(4, len(pairs))
    rows = math.ceil(len(pairs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (task, metric) in zip(axes.flat, pairs, strict=False):
        vals = [results[m].get(task, {}).get(metric, float("nan")) for m in models]
        ax.bar(models, vals, color=[colors[i % len(colors)] for i in range(len(models))])
        ax.set_title(f"{task}\n{metric}", fontsize=9)
        ax.tick_params(axis="x", labelsize=8, rotation=30)
    for ax in list(axes.flat)[len(pairs) :]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def radar_axes(mt: dict[str, dict[str, float]]) -> list[str]:
    """Categories (FastChat's radar); with fewer than 3, turn 1 and 2 are added as axes."""
    cats = list(dict.fromkeys(k for row in mt.values() for k in row if k.startswith("category/")))
    return cats if len(cats) >= 3 else ["turn1", "turn2", *cats]


def plot_radar(results: Results, path: Path) -> Path | None:
    """MT-Bench scores (1-10) per category, one polygon per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mt = {m: r["mt_bench"] for m, r in results.items() if r.get("mt_bench")}
    if not mt:
        return None
    axes_ = radar_axes(mt)
    angles = [2 * math.pi * i / len(axes_) for i in range(len(axes_))]
    fig = plt.figure(figsize=(5, 5))
    ax = fig.add_subplot(projection="polar")
    for model in ordered(list(mt)):
        vals = [mt[model].get(a, float("nan")) for a in axes_]
        ax.plot([*angles, angles[0]], [*vals, vals[0]], label=model)
        ax.fill([*angles, angles[0]], [*vals, vals[0]], alpha=0.1)
    ax.set_xticks(angles)
    ax.set_xticklabels([a.removeprefix("category/") for a in axes_])
    ax.set_ylim(0, 10)
    ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1), fontsize=8)
    ax.set_title("MT-Bench (1-10)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def write_report(
    out: Path, results: Results, meta: dict[str, Any], tasks: list[str], wanted: list[str]
) -> dict[str, Path]:
    """Write results.json, report.md and plots/ into `out`. Returns {name: path}."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", {"results": results, **meta})
    rows = table_rows(results, tasks)
    plots = {
        "key_metrics": plot_bars(
            results, key_metrics(results, wanted, tasks), out / "plots" / "key_metrics.png"
        ),
        "mt_bench_radar": plot_radar(results, out / "plots" / "mt_bench_radar.png"),
    }
    md = [
        "# C2F evaluation report",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')} · models: "
        + ", ".join(
            f"`{m}` ({'chat' if meta['models'][m]['chat'] else 'plain'})"
            for m in ordered(list(results))
        ),
        "",
    ]
    if meta.get("mt_bench"):
        mb = meta["mt_bench"]
        md += [
            f"MT-Bench: {mb['questions']} questions from `{mb['source']}`, judge "
            f"`{mb['judge']}`; scores 1-10, failed judgments excluded.",
            "",
        ]
    md += [markdown_table(results, rows), ""]
    md += [f"![{k}](plots/{p.name})" for k, p in plots.items() if p]
    md += ["", "Seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in meta["seconds"].items()), ""]
    (out / "report.md").write_text("\n".join(md) + "\n")
    files = {
        "results": out / "results.json",
        "report": out / "report.md",
        **{k: p for k, p in plots.items() if p},
    }
    log_media(results, rows, files)
    return files


def log_media(results: Results, rows: list[tuple[str, str]], files: dict[str, Path]) -> None:
    """Table and images to the active wandb run, when the tracker started one."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb else None
    if run is None:
        return
    models = ordered(list(results))
    data = [[t, m, *[results[x].get(t, {}).get(m) for x in models]] for t, m in rows]
    media: dict[str, Any] = {
        "eval/report": wandb.Table(columns=["task", "metric", *models], data=data)
    }
    for name in ("key_metrics", "mt_bench_radar"):
        if name in files:
            media[f"eval/{name}"] = wandb.Image(str(files[name]))
    run.log(media)


def read_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
