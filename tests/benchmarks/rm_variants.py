"""Reward-model variants on the tiny world, measured in one run on the same samples.

Prints, per variant, agreement with the gold scorer on fresh answers for held-out animals and
for PPO's animals, on pairs that differ by one defect (wrong fact, repeat, missing explanation,
off-topic), pairwise accuracy on prepare's held-out pairs, and training seconds. The answers
(train, evaluation) are sampled once and shared by every variant.

    python -m c2f_exp stages=[prepare] tracker=none        # the prepared world, once
    python tests/benchmarks/rm_variants.py [--prep DIR] [--only NAME ...] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from c2f_exp.reward import model as rmod
from c2f_exp.reward import preferences as prefs
from c2f_exp.reward import tiny
from c2f_exp.reward.config import RewardArchConf, RewardConf

ROOT = Path(__file__).resolve().parents[2]
# name -> overrides of conf/reward/tinyworld.yaml (whose default is BT + knowledge + sentences)
OFF = {"knowledge": {"enabled": False}}
PROC = {"objective": "process", "defects": {"enabled": True}, **OFF}
VARIANTS: dict[str, dict] = {
    "bt_last alone": OFF,
    "bt_last + defects": {"defects": {"enabled": True}, **OFF},
    "process, on-policy only": {"objective": "process", **OFF},
    "process + defects": PROC,
    "process + defects, 4 epochs lr 2e-3": {**PROC, "train": {"epochs": 4, "lr": 2e-3}},
    "process + defects, 2 rounds": {**PROC, "rounds": 2},
    "process + defects, 6 layers": {**PROC, "arch": {"num_layers": 6}},
    "bt_last + knowledge, token features": {"knowledge": {"sentences": False}},
    "bt_last + knowledge + sentences (default)": {},
    "bt_last + defects + knowledge + sentences": {"defects": {"enabled": True}},
    "bt_last + knowledge + sentences, 2 rounds": {"rounds": 2},
    "bt_last + knowledge + sentences, 6 layers": {"arch": {"num_layers": 6}},
}
COLS = (
    ("held-out", "gold_agreement"),
    ("PPO", "ppo_prompts_gold_agreement"),
    ("wrong", "defect_wrong_agreement"),
    ("PPO wrong", "ppo_prompts_defect_wrong_agreement"),
    ("repeat", "defect_repeat_agreement"),
    ("explain", "defect_explanation_agreement"),
    ("off-topic", "defect_off_topic_agreement"),
    ("pairwise", "test_accuracy"),
    ("train s", "train_seconds"),
)


def _prepared(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    done = [p.parent for p in (ROOT / "outputs/cache/prepare").glob("*/DONE")]
    full = [p for p in done if len(json.loads((p / "world.json").read_text())["entities"]) >= 100]
    if not full:
        raise SystemExit("no full-size prepare artifact: python -m c2f_exp stages=[prepare]")
    return max(full, key=lambda p: p.stat().st_mtime)


def run_variant(name: str, over: dict, prep: Path, lab, static, test, seed: int) -> dict:
    """Train and evaluate one variant; returns its metrics."""
    r = OmegaConf.merge(
        OmegaConf.structured(RewardConf), OmegaConf.load(ROOT / "conf/reward/tinyworld.yaml"), over
    )
    model, tok = rmod.init_reward_model(
        str(prep / "base"),
        "plain",
        seed,
        pooling="sum" if r.objective == "process" else "last",
        arch=RewardArchConf.overrides(r.arch),
    )
    m = tiny.train_tiny(r, lab, model, tok, static, seed, Path("/tmp/rm_variants") / name[:8])
    m.pop("history")
    m["test_accuracy"] = rmod.pairwise_accuracy(model, tok, test, "plain", 64)["accuracy"]
    m.update(tiny.evaluate_tiny(r, lab, model, tok, seed))
    return m


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prep")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", help="a file to keep the sampled answers in between runs")
    ap.add_argument("--set", nargs="*", default=[], help="extra variant: dotted overrides")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    prep = _prepared(args.prep)
    rows = [json.loads(x) for x in (prep / "data/preferences_train.jsonl").open()]
    static = [{k: p[k] for k in ("prompt", "chosen", "rejected")} | {"margin": 0.0} for p in rows]
    test = [json.loads(x) for x in (prep / "data/preferences_test.jsonl").open()]
    lab = prefs.TinyWorldLabeller(prep, str(prep / "base"))
    cache = Path(args.samples) if args.samples else None
    if cache and cache.is_file():
        lab._memo = torch.load(cache, weights_only=False)
    variants = dict(VARIANTS)
    if args.set:
        variants = {"custom " + " ".join(args.set): OmegaConf.from_dotlist(args.set)}
    print(f"prepared world: {prep}")
    print("| variant | " + " | ".join(c for c, _ in COLS) + " |")
    print("|---" * (len(COLS) + 1) + "|")
    for name, over in variants.items():
        if args.only and not any(o in name for o in args.only):
            continue
        t0 = time.time()
        m = run_variant(name, over, prep, lab, static, test, args.seed)
        cells = [m.get(k) for _, k in COLS]
        text = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in cells]
        print(f"| {name} | " + " | ".join(text) + f" |  ({time.time() - t0:.0f} s)", flush=True)
        if cache:
            torch.save(lab._memo, cache)


if __name__ == "__main__":
    main()
