"""Checkpoint and resume for the stages that train with a transformers `Trainer` (prepare's
pretraining and SFT, the reward model).

The trainers write their checkpoints into the stage's work dir (the pipeline keeps it when a
build fails or is killed: docs/method.md §4 "Nothing lost"); a rerun of the same command finds the
newest complete checkpoint there and continues from it with the optimizer, scheduler, RNG
state and data position restored (transformers' own `resume_from_checkpoint`). A trainer that
had finished is loaded from its final checkpoint and trains no further. `save_steps: 0` turns
checkpoints off.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def checkpoint_args(save_steps: int) -> dict[str, Any]:
    """`TrainingArguments` keys: a checkpoint every `save_steps` optimizer steps and at the end
    (only the newest is kept), or none when `save_steps` is 0."""
    if not save_steps:
        return {"save_strategy": "no"}
    return {"save_strategy": "steps", "save_steps": int(save_steps), "save_total_limit": 1}


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest `checkpoint-N` dir under `output_dir` that was written to the end.

    transformers writes a checkpoint's `trainer_state.json` after its weights, optimizer and
    RNG state, so a checkpoint whose state file is missing or unreadable (killed while saving)
    is passed over for the one before it."""
    d = Path(output_dir)
    if not d.is_dir():
        return None
    steps = [
        (int(p.name.split("-")[1]), p)
        for p in d.glob("checkpoint-*")
        if p.is_dir() and p.name.split("-")[1].isdigit()
    ]
    for _, p in sorted(steps, reverse=True):
        try:
            json.loads((p / "trainer_state.json").read_text())
        except (OSError, ValueError):
            log.warning("skipping incomplete checkpoint %s", p)
            continue
        return str(p)
    return None


def train(trainer: Any, what: str) -> Any:
    """`trainer.train()`, resumed from the newest checkpoint in its output dir when there is one
    (and the trainer checkpoints at all).

    A checkpoint at the end of training (its state says global_step >= max_steps) is loaded and
    not trained on: transformers' resume would run one more optimizer step before it notices
    that the run is over (when max_steps ends mid-epoch). Under DeepSpeed or FSDP the engine
    loads its own shards, so there the resume is left to transformers."""
    args = trainer.args
    last = last_checkpoint(args.output_dir) if args.save_strategy != "no" else None
    if last:
        state = json.loads((Path(last) / "trainer_state.json").read_text())
        sharded = getattr(trainer, "is_deepspeed_enabled", False) or getattr(
            trainer, "is_fsdp_enabled", False
        )
        if not sharded and 0 < state.get("max_steps", 0) <= state.get("global_step", 0):
            from transformers import TrainerState

            log.info("%s: finished before; its weights are loaded from %s", what, last)
            trainer._load_from_checkpoint(last)  # transformers' loader: shards, tied weights
            trainer.state = TrainerState.load_from_json(str(Path(last) / "trainer_state.json"))
            return None
        log.info("%s: resuming from %s", what, last)
    return trainer.train(resume_from_checkpoint=last)
