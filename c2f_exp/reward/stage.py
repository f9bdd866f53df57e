"""`reward` stage: a Bradley-Terry reward model (TRL RewardTrainer) on preference pairs.

Artifact: `model/`, an HF sequence-classification directory (num_labels 1, tokenizer alongside,
pad_token_id and the input format `c2f_reward_format` in its config). With `reward.path` set, the
stage trains nothing: it checks that model against the policy's vocabulary, links it as
`model/` (or records a hub id in `model_ref.json`) and evaluates it.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from c2f_exp.core import hub, layout
from c2f_exp.core.errors import ConfigError
from c2f_exp.core.model_card import write_model_card
from c2f_exp.core.tokenizers import save_tokenizer
from c2f_exp.reward import knowledge, tiny
from c2f_exp.reward import model as rmod
from c2f_exp.reward import preferences as prefs
from c2f_exp.reward.config import RewardArchConf
from c2f_exp.reward.model import score_texts  # noqa: F401  (public: used by coarse, eval)
from c2f_exp.sources import source_for
from c2f_exp.stages import StageContext, distributed_key, model_dir, subtree

if TYPE_CHECKING:
    from c2f_exp.config import C2FConfig

log = logging.getLogger(__name__)


class RewardStage:
    name = "reward"

    def config_subtree(self, cfg: C2FConfig) -> dict[str, Any]:
        r = cfg.reward
        init = None if r.path else getattr(cfg.model, r.init)
        sub = {"reward": r, "seed": cfg.seed, "policy": cfg.model.base, "init": init}
        sub.update(distributed_key(cfg))  # ranks and ZeRO change a trained model's weights
        return subtree(sub)

    def preflight(self, cfg: C2FConfig) -> None:
        r = cfg.reward
        if r.path:
            ref = hub.resolve_model(r.path, "reward.path")
            hub.check_local_weights(ref, "reward.path")  # .bin-only or truncated: named here
            policy = cfg.model.base.path
            if policy and Path(ref).is_dir() and Path(policy).expanduser().is_dir():
                rmod.check_compatible(ref, policy)
        else:
            source_for(cfg, "reward.source").check_reward_data(r)  # hub: data set reachable

    def run(self, ctx: StageContext, out: Path) -> dict[str, Any]:
        r, src = ctx.cfg.reward, source_for(ctx.cfg, "reward.source")
        prep = _prepared(ctx) if src.reads_prepare else None
        train, test = src.preference_pairs(r, prep)
        labeller = None  # the gold scorer labels fresh answers (tiny world only)
        if src.has_gold_scorer:
            labeller = prefs.TinyWorldLabeller(prep, model_dir(ctx, "base"))
        if r.path:
            ref = hub.resolve_model(r.path, "reward.path")
            rmod.check_compatible(ref, model_dir(ctx, "base"))
            if Path(ref).is_dir():
                (out / "model").symlink_to(Path(ref).resolve(), target_is_directory=True)
            else:
                (out / layout.MODEL_REF).write_text(json.dumps({"ref": ref}))
            model, tok = rmod.load_reward_model(ref)
            metrics: dict[str, Any] = {"trained": False}
        else:
            model, tok, metrics = _train(ctx, train, test, out, labeller)
        acc = rmod.pairwise_accuracy(model, tok, test, r.format, r.eval_batch_size)
        metrics.update(test_pairs=len(test), test_accuracy=acc["accuracy"])
        metrics["test_margin"] = acc["margin"]
        if labeller and r.gold.enabled:  # fresh answers for held-out animals and PPO's animals
            metrics.update(tiny.evaluate_tiny(r, labeller, model, tok, ctx.cfg.seed))
        if not r.path:  # a linked reward.path directory is the user's: write no card into it
            write_model_card(
                out / "model",
                role="reward",
                description=f"Bradley-Terry reward model (`{r.objective}` objective) from `init`.",
                parents={"init": model_dir(ctx, r.init)},
                tags=["reward-model", "rlhf"],
                metrics=metrics,
            )
        numbers = {f"reward/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
        ctx.tracker.log(numbers)
        log.info("reward model: %s", metrics)
        return metrics


def _train(ctx: StageContext, train: list[dict], test: list[dict], out: Path, labeller) -> tuple:
    """Train from `reward.init` and save to `out/model`. Returns (model, tok, metrics)."""
    r, seed = ctx.cfg.reward, ctx.cfg.seed
    prefs.require_pairs(train, "for training")
    model, tok = rmod.init_reward_model(
        model_dir(ctx, r.init),
        r.format,
        seed,
        lambda: model_dir(ctx, "instruct"),
        pooling="sum" if r.objective == "process" else "last",
        arch=RewardArchConf.overrides(r.arch),
    )
    init_acc = rmod.pairwise_accuracy(model, tok, test, r.format, r.eval_batch_size)
    if labeller:
        metrics = tiny.train_tiny(
            r, labeller, model, tok, train, seed, ctx.work_dir / "rm", model_dir(ctx, r.init)
        )
    else:
        t0 = time.time()
        hist = rmod.train_reward_model(model, tok, train, r.format, r.train, ctx.work_dir, seed)
        metrics = {"train_pairs": len(train), "train_seconds": round(time.time() - t0, 2)}
        metrics["history"] = hist
    for h in (h for h in metrics.pop("history") if "loss" in h):
        logged = {"reward/loss": h["loss"]}
        if "accuracy" in h:
            logged["reward/batch_accuracy"] = h["accuracy"]
        ctx.tracker.log(logged, int(h.get("step", 0)))
    metrics.update(trained=True, test_accuracy_init=init_acc["accuracy"])
    metrics["n_params"] = sum(p.numel() for p in model.parameters())
    model.eval().requires_grad_(False)
    model.save_pretrained(out / "model")
    knowledge.save(model, out / "model")  # its LM beside it, when it has a knowledge head
    save_tokenizer(tok, out / "model")  # a tokenizer class transformers 4.46+ loads
    return model, tok, metrics


def _prepared(ctx: StageContext) -> Path:
    if "prepare" not in ctx.upstream:
        raise ConfigError(
            "reward.source=tinyworld needs the prepare stage's data; add prepare to stages "
            "(stages=[prepare,reward])"
        )
    return Path(ctx.upstream["prepare"]["path"])
