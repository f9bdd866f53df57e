"""The coarse stage's test builders: config, micro world, stage context, trace, trainer.

Used by tests/coarse/test_coarse.py (also the subprocess driver), test_gold_monitor.py and the
other coarse tests; the `micro` fixture (tests/conftest.py) is `build_micro_world` once per
session.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import torch
from omegaconf import DictConfig, OmegaConf

from tests.helpers import MICRO, check, compose_root


def coarse_cfg(
    overrides: dict | None = None,
    schedule: str = "continuous_max",
    distributed: str = "none",
    micro: bool = True,
) -> DictConfig:
    """The root config with `length_schedule=<schedule>`, `distributed=<distributed>` and (with
    `micro`) the micro coarse run's values, then `overrides` merged on top: a DictConfig (to
    save, merge into); `check(...)` gives what the stage gets (`make_ctx` does that)."""
    cfg = compose_root([f"length_schedule={schedule}", f"distributed={distributed}"])
    micro_values = {
        "model": {"arch": {"max_position_embeddings": 256}},
        "coarse": {
            "steps": 3,
            "batch_size": 8,
            "minibatch_size": 4,
            "ppo_epochs": 2,
            "eval_prompts": 4,
            "checkpoint_every": 2,
        },
        "length_schedule": {"l_min": 8, "l_max": 24},
    }
    return OmegaConf.merge(cfg, micro_values if micro else {}, overrides or {})


def coarse_conf(*args, **kwargs):
    """`coarse_cfg(...)` checked as the pipeline checks it: the typed config (`C2FConfig`)."""
    return check(coarse_cfg(*args, **kwargs))


def load_cfg(path: Path | str):
    """A config `OmegaConf.save`d by a test, merged into the schema and checked (the stage
    driver in tests/coarse/test_coarse.py runs on it)."""
    from c2f_exp.config import C2FConfig

    return check(OmegaConf.merge(OmegaConf.structured(C2FConfig), OmegaConf.load(path)))


def build_micro_world(root: Path) -> dict:
    """A 12-entity world, tokenizer, random tiny base and reward model. Returns `upstream`."""
    from transformers import AutoModelForSequenceClassification

    from c2f_exp.tinyworld import data
    from c2f_exp.tinyworld import training as models
    from c2f_exp.tinyworld.tokenizer import train_tokenizer
    from c2f_exp.tinyworld.world import generate_world

    world = generate_world(0, 12, 0.3)
    docs = data.pretraining_corpus(world, 40, 1)
    tok = train_tokenizer(docs, world.vocabulary())
    arch = SimpleNamespace(**MICRO)
    base = models.build_model(tok, arch, 0)
    prep = root / "prepare"
    (prep / "data").mkdir(parents=True)
    base.save_pretrained(prep / "base")
    tok.save_pretrained(prep / "base")
    (prep / "world.json").write_text(world.to_json())
    rows = data.ppo_prompts(world, world.entities)
    (prep / "data" / "ppo_prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    torch.manual_seed(1)
    rm = AutoModelForSequenceClassification.from_pretrained(prep / "base", num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    rm.save_pretrained(root / "reward" / "model")
    tok.save_pretrained(root / "reward" / "model")
    return {"prepare": {"path": str(prep)}, "reward": {"path": str(root / "reward")}}


def make_ctx(cfg, upstream: dict, run: Path, work: Path):
    """A StageContext for the coarse stage. `cfg`: a DictConfig (checked here, as the pipeline
    checks it) or the typed config (`C2FConfig`) itself."""
    from c2f_exp.core.tracking import Tracker
    from c2f_exp.stages import StageContext

    if isinstance(cfg, DictConfig):
        cfg = check(cfg)
    run.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(OmegaConf.create({"backend": "none"}), run, {}, "test", "test")
    tracker.stage("coarse", run / "coarse")
    return SimpleNamespace(
        ctx=StageContext(cfg, run, run / "coarse", work, tracker, dict(upstream)), tracker=tracker
    )


def read_trace(out: Path) -> list[dict]:
    with open(out / "length_trace.csv") as fh:
        return list(csv.DictReader(fh))


def _trainer(
    micro: dict,
    tmp: Path,
    reward_fn,
    over: dict | None = None,
    critic: str = "reward",
    gold_source=None,
):
    """A CoarseTrainer on the micro world; `gold_source(prompts, rollout)` adds a gold monitor."""
    from transformers import AutoTokenizer

    from c2f_exp.coarse import critic as cr
    from c2f_exp.coarse.gold_rewards import GoldMonitor
    from c2f_exp.coarse.length_schedules import build_schedule
    from c2f_exp.coarse.ppo import build_kl_controller
    from c2f_exp.coarse.trainer import CoarseTrainer, TrainerParts

    cfg = coarse_conf({"coarse": over or {}})
    c = cfg.coarse
    base = str(Path(micro["prepare"]["path"]) / "base")
    rm = str(Path(micro["reward"]["path"]) / "model")
    tok = AutoTokenizer.from_pretrained(base)
    acc = cr.build_accelerator(cfg.distributed, c)
    torch.manual_seed(0)
    if c.dtype == "float32":
        model = cr.ActorCritic(
            cr.load_policy(base, torch.float32, False),
            cr.load_critic(critic, rm, base, torch.float32),
        )
    else:  # the stage's own loading (its precision rules)
        model = cr.build_models(acc, base, rm, c)[0]
    rows = [
        json.loads(x)
        for x in (Path(micro["prepare"]["path"]) / "data" / "ppo_prompts.jsonl")
        .read_text()
        .splitlines()
    ]
    logged: list[tuple[dict, int]] = []
    monitor = GoldMonitor(gold_source, c, lambda t: t) if gold_source else None
    parts = TrainerParts(
        accelerator=acc,
        model=model,
        ref_model=cr.load_frozen(base, "causal", torch.float32),
        reward_fn=reward_fn,
        schedule=build_schedule(cfg.length_schedule),
        kl_ctl=build_kl_controller("fixed", c.kl_coef, None, 1),
        tok=tok,
        prompts=[r["prompt"] for r in rows],
        prefix="<s> ",
        work_dir=tmp,
        log_fn=lambda m, s: logged.append((m, s)),
        seed=0,
        monitor=monitor,
    )
    return CoarseTrainer(c, parts), tok, logged
