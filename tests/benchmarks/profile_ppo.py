"""Where one PPO iteration of ours spends its time: phases, and torch.profiler's top operators.

Same models and settings as ppo_vs_trl.py (random-init Mistral policy, hidden 128, 2 layers;
batch 8, 4 PPO epochs, 1 minibatch, temperature 1, fixed limit). Prints, per response length,
the median seconds of each phase (rollout, reward, experience, update) over the timed
iterations, and the profiler's top operators (self CPU time) of one iteration.

    python tests/benchmarks/profile_ppo.py [--lengths 128 256] [--updates 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ppo_vs_trl as bench

PHASES = ("rollout", "reward", "experience", "update")


def trainer_for(d: Path, length: int, updates: int):
    """Our CoarseTrainer on the benchmark's models (fixed limit = length)."""
    return bench.trainer_for(d, length, updates, prefix="prof_")[0]


def timed(times: dict, name: str, fn):
    def wrap(*a, **k):
        t0 = time.perf_counter()
        out = fn(*a, **k)
        times.setdefault(name, []).append(time.perf_counter() - t0)
        return out

    return wrap


def profile(d: Path, length: int, updates: int, top: int) -> None:
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprof

    import c2f_exp.coarse.trainer as trm

    tr = trainer_for(d, length, updates + 1)
    times: dict[str, list[float]] = {}
    if hasattr(tr, "engine"):  # coarse/engines.py
        tr.engine.generate = timed(times, "rollout", tr.engine.generate)
    else:  # before engines existed
        trm.generate = timed(times, "rollout", trm.generate)
    trm.make_experience = timed(times, "experience", trm.make_experience)
    tr.reward_fn = timed(times, "reward", tr.reward_fn)
    tr.update = timed(times, "update", tr.update)
    tokens = []
    for step in range(updates + 1):
        if step == updates:  # the last iteration under the profiler
            with tprof(activities=[ProfilerActivity.CPU]) as prof:
                row = tr.run_step(step)
        else:
            row = tr.run_step(step)
        tokens.append(row["tokens"])
    med = {k: statistics.median(v[1:updates]) for k, v in times.items()}
    total = sum(med[k] for k in PHASES)
    print(f"\n== length {length}: {statistics.mean(tokens[1:]):.0f} tokens per iteration")
    for k in PHASES:
        print(f"  {k:<11s} {med[k]:7.3f} s  {100 * med[k] / total:5.1f}%")
    print(f"  {'total':<11s} {total:7.3f} s")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))
    del torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--updates", type=int, default=4, help="iterations timed (+1 profiled)")
    ap.add_argument("--top", type=int, default=15)
    a = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="profile_ppo_"))
    bench.build_models(d, bench.PREP / "base")
    for length in a.lengths:
        profile(d, length, a.updates, a.top)


if __name__ == "__main__":
    main()
