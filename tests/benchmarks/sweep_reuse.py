"""What a λ sweep costs beyond one full run, and joblib (2 workers) vs. the basic launcher.

1. One full default run (`python -m c2f_exp`) on a fresh cache that holds only a copy of the
   prepared world (prepare is the same for both and takes ~2 min: copying it keeps the
   measurement about what a sweep adds).
2. The `merge_coefficient` sweep (`merger.filter=none`: 8 λ variants) on another such cache:
   its first job trains reward + coarse, every other job is one merge + one eval.
   Goal (issue 9): sweep wall <= 1.3 x the full run + the extra jobs' merge and eval seconds.
3. The same sweep on copies of that cache holding only prepare, reward and coarse (every job
   merges and evaluates) with the basic launcher and with joblib (n_jobs=2): wall-time ratio.

    python tests/benchmarks/sweep_reuse.py [--prep outputs/cache/prepare/<hash>] [--skip-full]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ["sweep=merge_coefficient", "merger.filter=none", "tracker=none"]


def run(args: list[str], cache: Path, out: Path, multirun: bool) -> float:
    """Run the CLI; return wall seconds (the whole process, as a user waits for it)."""
    where = f"hydra.sweep.dir={out}" if multirun else f"hydra.run.dir={out}"
    cmd = [sys.executable, "-m", "c2f_exp", *(["-m"] if multirun else []), where,
           f"paths.cache_dir={cache}", *args]  # fmt: skip
    env = {**os.environ, "TQDM_DISABLE": "1"}
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    dt = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return dt


def fresh_cache(tmp: Path, name: str, prep: Path) -> Path:
    cache = tmp / name
    shutil.copytree(prep, cache / "prepare" / prep.name)
    return cache


def upstream_copy(src: Path, dst: Path) -> Path:
    """A cache holding src's prepare, reward and coarse artifacts (no merges, no evals)."""
    for stage in ("prepare", "reward", "coarse"):
        shutil.copytree(src / stage, dst / stage, ignore=shutil.ignore_patterns("*.lock"))
    return dst


def stage_seconds(sweep_dir: Path) -> list[dict[str, float]]:
    jobs = sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    out = []
    for j in jobs:
        m = json.loads((j / "manifest.json").read_text())
        out.append({s["stage"]: s["seconds"] for s in m["stages"]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prep", type=Path, default=None, help="a finished prepare artifact")
    ap.add_argument("--skip-full", action="store_true", help="only the launcher comparison")
    ap.add_argument("--keep", type=Path, default=None, help="keep run dirs here")
    a = ap.parse_args()
    prep = a.prep or max((ROOT / "outputs/cache/prepare").glob("[0-9a-f]*"), key=os.path.getmtime)
    tmp = Path(a.keep or tempfile.mkdtemp(prefix="sweep_reuse-"))
    print(f"prepare artifact: {prep}\nrun dirs: {tmp}")
    sweep_cache = fresh_cache(tmp, "cache_sweep", prep)
    if not a.skip_full:
        full = run(["tracker=none"], fresh_cache(tmp, "cache_full", prep), tmp / "full", False)
        print(f"one full default run (prepare cached): {full:.0f} s")
        sweep = run(SWEEP, sweep_cache, tmp / "sweep_cold", True)
        secs = stage_seconds(tmp / "sweep_cold")
        extra = sum(s.get("merge", 0) + s.get("eval", 0) for s in secs[1:])
        print(f"merge_coefficient sweep, {len(secs)} jobs, cold: {sweep:.0f} s; "
              f"extra jobs' merge+eval: {extra:.0f} s")  # fmt: skip
        print(f"  (sweep - extra) / full run = {(sweep - extra) / full:.2f} (goal <= 1.3)")
        print(f"  sweep / (full + extra)     = {sweep / (full + extra):.2f}")
    if a.skip_full:  # train the upstream stages once (the first job of a basic sweep)
        run([*SWEEP, "stages=[prepare,reward,coarse]"], sweep_cache, tmp / "upstream", True)
    basic = run(SWEEP, upstream_copy(sweep_cache, tmp / "c_basic"), tmp / "sweep_basic", True)
    par = [*SWEEP, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    joblib = run(par, upstream_copy(sweep_cache, tmp / "c_joblib"), tmp / "sweep_joblib", True)
    n = len(stage_seconds(tmp / "sweep_basic"))
    print(f"sweep with upstream reused ({n} jobs, each one merge + one eval):")
    print(f"  basic {basic:.0f} s, joblib n_jobs=2 {joblib:.0f} s: joblib/basic = "
          f"{joblib / basic:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
