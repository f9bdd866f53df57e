"""Learning in the tiny world: the default `coarse` run vs. the base model (issue 3).

Runs the coarse stage (default `conf/coarse/tinyworld.yaml` + `length_schedule`) on a prepared
full-size tiny world with a trained reward model, then prints gold-scorer facts per answer,
repetition and reward-model scores of greedy answers on held-out entities, base vs. Coarse Actor,
and the ratio. Nothing is asserted: a benchmark prints numbers measured in the same run.

    python tests/benchmarks/coarse_learning.py [--prep DIR] [--reward-model DIR] [--seed N]
        [--schedule continuous_max] [--gold-reward] [key=value ...]   # e.g. coarse.steps=40

`--gold-reward` swaps the learned reward model for the gold scorer's total (a stand-in that
separates PPO/CM from reward-model quality; the stage itself always uses the learned model).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def _latest_prepare() -> Path:
    """Newest complete prepare artifact (run `python -m c2f_exp` first, or pass --prep)."""
    done = sorted(
        (ROOT / "outputs" / "cache" / "prepare").glob("*/DONE"), key=lambda p: p.stat().st_mtime
    )
    return done[-1].parent if done else ROOT / "outputs" / "cache" / "prepare" / "MISSING"


PREP = _latest_prepare()
KEYS = (  # held-out statistics both benchmarks print, base vs. actor
    "facts_per_answer",
    "gold_total_per_answer",
    "explained_per_answer",
    "wrong_per_answer",
    "repetition_rate",
    "eos_rate",
    "mean_new_tokens",
    "rm_score",
)


def find_reward_model() -> str:
    """The newest reward artifact's model/ under outputs/cache/reward, else /tmp/coarse/reward."""
    found = sorted(
        (ROOT / "outputs" / "cache" / "reward").glob("*/model/config.json"),
        key=lambda p: p.stat().st_mtime,
    )
    return str(found[-1].parent if found else Path("/tmp/coarse/reward/model"))


def rm_scores(rm_dir: str, model_dir: str, rows: list[dict], max_new: int) -> float:
    """Mean reward-model score of greedy answers of `model_dir` to `rows`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from c2f_exp.reward.model import load_reward_model, score_texts
    from c2f_exp.tinyworld.quality import generate

    tok = AutoTokenizer.from_pretrained(model_dir)
    outs = generate(
        AutoModelForCausalLM.from_pretrained(model_dir),
        tok,
        [r["prompt"] for r in rows],
        max_new,
        chat=False,
    )
    rm, rm_tok = load_reward_model(rm_dir)
    texts = [t for t, _, _ in outs]
    return score_texts(rm, rm_tok, [r["prompt"] for r in rows], texts).mean().item()


def use_gold_reward(prep: Path) -> None:
    """Make the stage score rollouts with the gold scorer's total instead of the reward model."""
    import torch

    import c2f_exp.coarse.experience as exp
    from c2f_exp.tinyworld.scorer import GoldScorer
    from c2f_exp.tinyworld.world import World

    scorer = GoldScorer(World.load(prep / "world.json"))

    def make(rm, rm_tok, tok, batch_size):
        def reward_fn(prompts, ro):
            texts = [
                tok.decode(r[m.bool()], skip_special_tokens=True)
                for r, m in zip(ro.response_ids, ro.response_mask, strict=True)
            ]
            subjects = [p.split()[-2] for p in prompts]  # "tell me about the X ."
            return torch.tensor(
                [scorer.score(t, s).total() for t, s in zip(texts, subjects, strict=True)]
            )

        return reward_fn

    exp.make_reward_fn = make


def run(
    prep: Path, rm_dir: str, schedule: str, seed: int, overrides: list[str], workdir: Path
) -> dict:
    """One coarse run; returns the stage's metrics plus timing and RM scores."""
    from omegaconf import OmegaConf

    from c2f_exp.coarse.stage import CoarseStage
    from tests.helpers.coarse import coarse_cfg, make_ctx

    cfg = coarse_cfg({"seed": seed}, schedule=schedule, micro=False)
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    up = {"prepare": {"path": str(prep)}, "reward": {"path": str(Path(rm_dir).parent)}}
    h = make_ctx(cfg, up, workdir / "run", workdir / "work")
    out = workdir / "out"
    out.mkdir()
    t0 = time.time()
    metrics = CoarseStage().run(h.ctx, out)
    metrics["seconds"] = round(time.time() - t0, 1)
    trace = [
        json.loads(x)
        for x in (workdir / "run" / "coarse" / "metrics.jsonl").read_text().splitlines()
        if '"limit"' in x
    ]
    metrics["train_seconds"] = round(sum(r["seconds"] for r in trace), 1)
    metrics["median_tokens_per_s"] = sorted(r["tokens_per_s"] for r in trace)[len(trace) // 2]
    held = [
        r
        for r in (
            json.loads(x) for x in (prep / "data" / "ppo_prompts.jsonl").read_text().splitlines()
        )
        if r["entity"] in json.loads((prep / "world.json").read_text())["heldout_entities"]
    ]
    held = held[: cfg.coarse.eval_prompts]
    n = cfg.coarse.eval_max_new_tokens or cfg.length_schedule.l_max
    metrics["base/heldout_rm_score"] = rm_scores(rm_dir, str(prep / "base"), held, n)
    metrics["actor/heldout_rm_score"] = rm_scores(rm_dir, str(out / "actor"), held, n)
    return metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prep", type=Path, default=PREP)
    ap.add_argument("--reward-model", default=None)
    ap.add_argument("--schedule", default="continuous_max")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="write the run here (else a temp dir)")
    ap.add_argument("--gold-reward", action="store_true", help="stand-in reward: gold scorer")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rm_dir = a.reward_model or find_reward_model()
    if a.gold_reward:
        use_gold_reward(a.prep)
    work = a.keep or Path(tempfile.mkdtemp(prefix="coarse_learning_"))
    work.mkdir(parents=True, exist_ok=True)
    m = run(a.prep, rm_dir, a.schedule, a.seed, a.overrides, work)
    print(f"reward: {'gold scorer (stand-in)' if a.gold_reward else rm_dir}\nrun dir: {work}")
    print(
        f"coarse run: {m['steps']} steps, {m['tokens_generated']} tokens generated, "
        f"{m['seconds']} s (training {m['train_seconds']} s, median "
        f"{m['median_tokens_per_s']:.0f} tokens/s), final limit {m['final_limit']}"
    )
    print(f"{'held-out, greedy':24s} {'base':>8s} {'actor':>8s} {'ratio':>7s}")
    for k in KEYS:
        b, c = m[f"base/heldout_{k}"], m[f"actor/heldout_{k}"]
        print(f"{k:24s} {b:8.3f} {c:8.3f} {c / b if b else float('nan'):7.2f}")
    print("METRICS " + json.dumps(m, default=str))


if __name__ == "__main__":
    main()
