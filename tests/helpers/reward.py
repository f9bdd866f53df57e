"""The reward stage's test builders: a micro prepare-like world, the config, a stage run.

Used by tests/reward/test_reward.py, test_knowledge_reward.py and test_reward_process.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from c2f_exp.core.tracking import Tracker
from c2f_exp.reward.stage import RewardStage
from c2f_exp.stages import StageContext
from tests.helpers import MICRO, check, compose_root

MICRO_ARCH = OmegaConf.create(MICRO)
SMALL = {
    "train": {"epochs": 2, "batch_size": 4},
    "eval_batch_size": 8,
    "gold": {"samples_per_prompt": 3, "max_new_tokens": 12, "max_prompts": 3},
    "onpolicy": {"enabled": True, "samples_per_prompt": 3, "max_new_tokens": 12},
}


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _micro_world(root: Path, seed: int = 0, words: tuple[str, ...] = ()) -> Path:
    """A prepare-like artifact: world.json, data/*.jsonl, base/ (random micro model)."""
    from c2f_exp.tinyworld import data
    from c2f_exp.tinyworld.tokenizer import train_tokenizer
    from c2f_exp.tinyworld.training import build_model
    from c2f_exp.tinyworld.world import generate_world

    world = generate_world(seed, 12)
    root.mkdir(parents=True)
    (root / "world.json").write_text(world.to_json())
    (root / "data").mkdir()
    _jsonl(
        root / "data" / "preferences_train.jsonl",
        data.preference_pairs(world, world.train_entities, 1, 2),
    )
    _jsonl(
        root / "data" / "preferences_test.jsonl",
        data.preference_pairs(world, world.heldout_entities, 2, 2),
    )
    _jsonl(root / "data" / "ppo_prompts.jsonl", data.ppo_prompts(world, world.entities))
    tok = train_tokenizer(data.pretraining_corpus(world, 40, 3), [*world.vocabulary(), *words])
    model = build_model(tok, MICRO_ARCH, seed)
    model.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    return root


def _compose(reward: str = "tinyworld", overrides: list[str] | None = None, **reward_over):
    """The root DictConfig `python -m c2f_exp reward=<reward> <overrides>` composes, with
    `reward_over` merged into its `reward` group (a bad choice fails here, as at composition)."""
    cfg = compose_root([f"reward={reward}", *(overrides or [])])
    return OmegaConf.merge(cfg, {"reward": reward_over}) if reward_over else cfg


def _cfg(reward: str = "tinyworld", overrides: list[str] | None = None, **reward_over):
    """The typed config the reward stage gets (`check`: every rule the pipeline runs before
    any stage) for `_compose(reward, overrides, **reward_over)`."""
    return check(_compose(reward, overrides, **reward_over))


def _ctx(cfg, tmp: Path, prep: Path | None) -> StageContext:
    # the pipeline builds its Tracker from the composed (DictConfig) tracker node
    tracker = Tracker(OmegaConf.structured(cfg.tracker), tmp, {}, group="t", name="t")
    tracker.stage("reward", tmp / "reward")
    up = {"prepare": {"path": str(prep), "config_hash": "x"}} if prep else {}
    return StageContext(cfg, tmp, tmp / "reward", tmp / "work", tracker, up)


def _run(cfg, tmp: Path, prep: Path | None) -> tuple[dict, Path]:
    out = tmp / "art"
    out.mkdir(parents=True)
    stage = RewardStage()
    stage.preflight(cfg)
    return stage.run(_ctx(cfg, tmp, prep), out), out
