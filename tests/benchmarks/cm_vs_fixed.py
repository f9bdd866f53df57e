"""Continuous Maximization vs. fixed (and linear) limits at an equal budget of generated tokens.

Every run is the coarse stage with `coarse.token_budget` set, so each schedule stops after the
same number of generated rollout tokens (a fixed short limit gets more, cheaper iterations).
All actors are evaluated the same way: greedy answers to held-out entities with the same
`max_new_tokens` (the largest limit), scored by the gold scorer and the reward model.

    python tests/benchmarks/cm_vs_fixed.py --budget 40000 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from coarse_learning import KEYS, PREP, find_reward_model, run, use_gold_reward


def arms(l_min: int, l_max: int, linear_steps: int) -> dict[str, tuple[str, list[str]]]:
    """name -> (length_schedule option, overrides)."""
    return {
        "continuous_max": (
            "continuous_max",
            [f"length_schedule.l_min={l_min}", f"length_schedule.l_max={l_max}"],
        ),
        f"fixed@{l_min}": ("fixed", [f"length_schedule.l_max={l_min}"]),
        f"fixed@{l_max}": ("fixed", [f"length_schedule.l_max={l_max}"]),
        "linear": (
            "linear",
            [
                f"length_schedule.l_min={l_min}",
                f"length_schedule.l_max={l_max}",
                f"length_schedule.steps={linear_steps}",
            ],
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=int, default=40000, help="generated tokens per run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--l-min", type=int, default=16)
    ap.add_argument("--l-max", type=int, default=128)
    ap.add_argument("--linear-steps", type=int, default=20)
    ap.add_argument("--only", nargs="*", default=None, help="run only these arms")
    ap.add_argument("--prep", type=Path, default=PREP)
    ap.add_argument("--reward-model", default=None)
    ap.add_argument("--out", type=Path, default=None, help="append per-run JSON lines here")
    ap.add_argument(
        "--gold-reward",
        action="store_true",
        help="stand-in reward: the gold scorer's total (isolates the schedule)",
    )
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    rm_dir = a.reward_model or find_reward_model()
    if a.gold_reward:
        use_gold_reward(a.prep)
    results: dict[str, list[dict]] = {}
    for name, (schedule, over) in arms(a.l_min, a.l_max, a.linear_steps).items():
        if a.only and name not in a.only:
            continue
        for seed in a.seeds:
            work = Path(tempfile.mkdtemp(prefix=f"cm_vs_fixed_{name}_{seed}_"))
            m = run(
                a.prep,
                rm_dir,
                schedule,
                seed,
                [
                    f"coarse.token_budget={a.budget}",
                    "coarse.steps=100000",
                    "coarse.checkpoint_every=100000",
                    f"coarse.eval_max_new_tokens={a.l_max}",
                    *over,
                    *a.overrides,
                ],
                work,
            )
            m.update(arm=name, seed=seed)
            results.setdefault(name, []).append(m)
            print(
                f"{name} seed {seed}: facts {m['actor/heldout_facts_per_answer']:.2f} "
                f"rm {m['actor/heldout_rm_score']:.2f} steps {m['steps']} tokens "
                f"{m['tokens_generated']} ({m['seconds']} s)",
                flush=True,
            )
            if a.out:
                with open(a.out, "a") as fh:
                    fh.write(json.dumps(m, default=str) + "\n")
    base = next(iter(results.values()))[0]
    print(
        f"\nreward: {'gold scorer (stand-in)' if a.gold_reward else rm_dir}; equal budget "
        f"{a.budget} generated tokens, seeds {a.seeds}; held-out greedy answers (max {a.l_max} "
        "new tokens); mean ± std over seeds; train_reward = training reward, last step"
    )
    print(
        f"{'arm':16s} {'steps':>6s} {'tokens':>7s} {'train_reward':>12s} "
        + " ".join(f"{k[:14]:>14s}" for k in KEYS)
    )
    print(
        f"{'base':16s} {'-':>6s} {'-':>7s} {'-':>12s} "
        + " ".join(f"{base[f'base/heldout_{k}']:14.3f}" for k in KEYS)
    )
    for name, ms in results.items():
        cells = []
        for k in KEYS:
            xs = [m[f"actor/heldout_{k}"] for m in ms]
            sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
            cells.append(f"{statistics.mean(xs):8.3f}±{sd:5.2f}")
        steps = statistics.mean(m["steps"] for m in ms)
        toks = statistics.mean(m["tokens_generated"] for m in ms)
        rew = statistics.mean(m["final_reward"] for m in ms)
        print(f"{name:16s} {steps:6.0f} {toks:7.0f} {rew:12.3f} " + " ".join(cells))


if __name__ == "__main__":
    main()
