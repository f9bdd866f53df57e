"""A grid of merges scored on finished runs: how the README's "Fine Actor" tables are made.

For each run directory (a `python -m c2f_exp` run or one job of a sweep, with its
`manifest.json`), every merge of the grid is built from that run's base, instruct and Coarse
Actor (`stages=[merge] merger.base/instruct/coarse=...`), and all of them are scored in one eval
stage next to the instruct model and the Coarse Actor (`stages=[prepare,eval]
eval.models={...}` with the run's own overrides, so its prepared world is reused from the
cache: run this with the code version that made the runs). Prints one markdown table per grid:
mean ± standard error over the runs of gold facts, gold total, MT-Bench (turn 1 / turn 2), EOS,
and MT-Bench per run; nothing is asserted.

    python tests/benchmarks/merge_grid.py RUN_DIR [RUN_DIR ...] [--grid search|heldout]
        [--out DIR]

`--grid search` is the 27-merge grid of the README, `--grid heldout` the six merges checked on
worlds the search did not see. Merges are written under `--out` (default: a temp dir), one dir
per run and recipe, and kept there between calls, so a rerun only scores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics as st
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]

KRM = "merger=knowledge_residue"
GRADIENT = "merger.coefficient=[1.0,0.0]"
SEARCH: dict[str, list[str]] = {
    "λ 0.75": [KRM, "merger.coefficient=0.75"],
    "λ 1.0": [KRM, "merger.coefficient=1.0"],
    "λ 1.25": [KRM, "merger.coefficient=1.25"],
    "λ 1.0 → 0.0 (default)": [KRM, GRADIENT],
    "λ 1.0 → 0.25": [KRM, "merger.coefficient=[1.0,0.25]"],
    "λ 1.0 → 0.5": [KRM, "merger.coefficient=[1.0,0.5]"],
    "λ 1.25 → 0.25": [KRM, "merger.coefficient=[1.25,0.25]"],
    "λ 1.5 → 0.5": [KRM, "merger.coefficient=[1.5,0.5]"],
    "λ 1.0, attention λ 0": [
        KRM,
        "merger.coefficient=1.0",
        "merger.module_overrides={self_attn:0.0}",
    ],
    "λ 1.5, attention λ 0": [
        KRM,
        "merger.coefficient=1.5",
        "merger.module_overrides={self_attn:0.0}",
    ],
    "λ 1.0, MLP λ 0": [KRM, "merger.coefficient=1.0", "merger.module_overrides={mlp:0.0}"],
    "λ 1.5, MLP λ 0": [KRM, "merger.coefficient=1.5", "merger.module_overrides={mlp:0.0}"],
    "λ 1.0, embeddings λ 0": [
        KRM,
        "merger.coefficient=1.0",
        "merger.module_overrides={embed_tokens:0.0}",
    ],
    "λ 1.0, sign_agree": [KRM, "merger.coefficient=1.0", "merger.filter=sign_agree"],
    "λ 1.0 → 0.0, sign_agree": [KRM, GRADIENT, "merger.filter=sign_agree"],
    "λ 1.5, sign_agree": [KRM, "merger.coefficient=1.5", "merger.filter=sign_agree"],
    "λ 1.0 → 0.0, magnitude 0.3": [KRM, GRADIENT, "merger.filter=magnitude", "merger.density=0.3"],
    "λ 1.0 → 0.0, magnitude 0.1": [KRM, GRADIENT, "merger.filter=magnitude", "merger.density=0.1"],
    "λ 1.0 → 0.0, dare 0.5": [KRM, GRADIENT, "merger.filter=dare", "merger.drop_p=0.5"],
    "λ 1.0 → 0.0, dare 0.9": [KRM, GRADIENT, "merger.filter=dare", "merger.drop_p=0.9"],
    "ties density 0.5, λ 1": ["merger=ties", "merger.density=0.5", "merger.coefficient=1.0"],
    "ties density 0.2, λ 1": ["merger=ties", "merger.density=0.2", "merger.coefficient=1.0"],
    "ties density 0.5, λ 2": ["merger=ties", "merger.density=0.5", "merger.coefficient=2.0"],
    "dare drop 0.5, λ 1": ["merger=dare", "merger.drop_p=0.5", "merger.coefficient=1.0"],
    "linear t 0.3": ["merger=linear", "merger.coefficient=0.3"],
    "linear t 0.5": ["merger=linear", "merger.coefficient=0.5"],
    "slerp t 0.5": ["merger=slerp", "merger.coefficient=0.5"],
}
HELDOUT = [
    "λ 1.0 → 0.0 (default)",
    "λ 1.0",
    "λ 1.0 → 0.0, magnitude 0.1",
    "ties density 0.5, λ 2",
    "linear t 0.5",
    "slerp t 0.5",
]
METRICS = {
    "facts": "tinyworld_about/correct_facts",
    "gold": "tinyworld_about/gold_total",
    "mt": "mt_bench/average",
    "t1": "mt_bench/turn1",
    "t2": "mt_bench/turn2",
    "eos": "text_stats/eos_rate",
}


def _cli(args: list[str], log: Path) -> None:
    with log.open("w") as f:
        proc = subprocess.run(
            [sys.executable, "-m", "c2f_exp", "tracker=none", *args],
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    if proc.returncode:
        raise SystemExit(f"failed (exit {proc.returncode}); see {log}")


def _stages(run: Path) -> dict[str, dict]:
    m = json.loads((run / "manifest.json").read_text())
    return {s["stage"]: s for s in m["stages"]}


def score_run(run: Path, grid: dict[str, list[str]], out: Path) -> dict[str, dict]:
    """Build the grid's merges from `run`'s artifacts and score them; {model: results}."""
    st_ = _stages(run)
    missing = [s for s in ("prepare", "coarse") if s not in st_]
    if missing:
        raise SystemExit(f"{run}: no {', '.join(missing)} stage in manifest.json")
    prep, actor = Path(st_["prepare"]["path"]), Path(st_["coarse"]["path"]) / "actor"
    roles = [f"merger.base={prep / 'base'}", f"merger.instruct={prep / 'instruct'}"]
    roles.append(f"merger.coarse={actor}")
    # one dir per run (two sweeps both have a job "1"), one merge dir per recipe (its overrides)
    work = out / f"{run.name}-{hashlib.sha256(str(run).encode()).hexdigest()[:8]}"
    work.mkdir(parents=True, exist_ok=True)
    models = {"instruct": prep / "instruct", "coarse": actor}
    for i, args in enumerate(grid.values()):
        spec = " ".join(args)
        tag = re.sub(r"[^A-Za-z0-9]+", "_", spec).strip("_")[:60]
        tag += "-" + hashlib.sha256(spec.encode()).hexdigest()[:8]
        merged = work / tag
        if not (merged / "model.safetensors").is_file():
            cache, rundir = f"paths.cache_dir={out / 'cache'}", f"hydra.run.dir={work / tag}-run"
            _cli(
                ["stages=[merge]", *args, *roles, f"merger.output={merged}", cache, rundir],
                work / f"{tag}.log",
            )
        models[f"m{i:02d}"] = merged  # eval names: short and unique within this grid
    over = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) or []
    keep = [o for o in over if not o.startswith(("stages=", "hydra.", "eval.models", "tracker="))]
    spec = ",".join(f"{k}:{v}" for k, v in models.items())
    models_arg, rundir = f"eval.models={{{spec}}}", f"hydra.run.dir={work / 'eval'}"
    _cli([*keep, "stages=[prepare,eval]", models_arg, rundir], work / "eval.log")
    res = json.loads((Path(_stages(work / "eval")["eval"]["path"]) / "results.json").read_text())
    names = {"instruct": "instruct model", "coarse": "Coarse Actor"}
    names.update({f"m{i:02d}": n for i, n in enumerate(grid)})
    return {names[k]: v for k, v in res["results"].items()}


def _get(r: dict, path: str) -> float:
    a, b = path.split("/")
    return float(r[a][b])


def _ms(xs: list[float]) -> str:
    if len(xs) < 2:
        return f"{xs[0]:.2f}"
    return f"{st.mean(xs):.2f} ± {st.stdev(xs) / len(xs) ** 0.5:.2f}"


def table(per_run: list[dict[str, dict]]) -> str:
    lines = [
        "| merge | facts | gold total | MT-Bench | turn 1 / turn 2 | EOS | MT-Bench per run |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in per_run[0]:
        v = {k: [_get(r[name], p) for r in per_run] for k, p in METRICS.items()}
        lines.append(
            f"| {name} | {st.mean(v['facts']):.2f} | {st.mean(v['gold']):.2f} | {_ms(v['mt'])} "
            f"| {st.mean(v['t1']):.2f} / {st.mean(v['t2']):.2f} | {st.mean(v['eos']):.2f} | "
            + " / ".join(f"{x:.2f}" for x in v["mt"])
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--grid", choices=("search", "heldout"), default="search")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    grid = SEARCH if args.grid == "search" else {k: SEARCH[k] for k in HELDOUT}
    out = args.out or Path(tempfile.mkdtemp(prefix="merge_grid-"))
    per_run = []
    for run in args.runs:
        print(f"{run}: {len(grid)} merges -> {out / run.name}", flush=True)
        per_run.append(score_run(run.resolve(), grid, out))
    print(f"\n{len(grid)} merges over {len(per_run)} runs (mean ± s.e.):\n")
    print(table(per_run))


if __name__ == "__main__":
    main()
