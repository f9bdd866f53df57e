"""`coarse` stage: the Coarse Actor — PPO on the *base* model with Continuous Maximization.

Policy and frozen reference = base; critic from the reward model (`coarse.critic_init`); frozen
reward model; limit from `length_schedule`. Artifact: `actor/` (HF model + tokenizer),
`length_trace.csv/.png`, and with `coarse.gold_every` > 0 the overoptimization monitor's
`overoptimization.csv/.png` (RM score and gold reward against KL; coarse/gold_rewards.py).
Checkpoints in the work dir (a killed run resumes); only rank 0 writes.
Math: c2f_exp/coarse/ppo.py; loop: c2f_exp/coarse/trainer.py.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from c2f_exp.core import hub, layout
from c2f_exp.core.errors import ConfigError
from c2f_exp.core.tokenizers import load_tokenizer
from c2f_exp.sources import source_for
from c2f_exp.stages import StageContext, distributed_key, model_dir, subtree

if TYPE_CHECKING:
    from c2f_exp.config import C2FConfig

log = logging.getLogger(__name__)
FINAL = ("limit", "reward", "value", "truncation_rate", "mean_response_length", "kl")


def rl_seed(cfg: C2FConfig) -> int:
    """The PPO run's seed: `coarse.seed`, or the run's `seed` when that is null."""
    return cfg.seed if cfg.coarse.seed is None else cfg.coarse.seed


class CoarseStage:
    name = "coarse"

    def config_subtree(self, cfg: C2FConfig) -> dict[str, Any]:
        sub = {"coarse": cfg.coarse, "length_schedule": cfg.length_schedule}
        sub["policy"] = cfg.model.base
        out = subtree({**sub, **distributed_key(cfg)})  # ranks and ZeRO change the weights
        del out["coarse"]["seed"]  # coarse.seed=<the run's seed> is the default's artifact
        for k in ("samples_every", "samples_per_step"):  # what is written down, not learned
            out["coarse"].pop(k, None)
        if out["coarse"].get("rollout", {}).get("engine", "hf") == "hf":  # speed knobs only:
            out["coarse"].pop("rollout", None)  # results equal to float tolerance, cache kept
        return {**out, "seed": rl_seed(cfg)}

    def preflight(self, cfg: C2FConfig) -> None:
        from c2f_exp.coarse.engines import check_engine
        from c2f_exp.coarse.gold_rewards import check_gold_source

        check_gold_source(cfg)  # the monitor's gold reward model can be found
        check_engine(cfg.coarse.rollout.engine)  # vllm: installed, and a CUDA GPU visible
        source_for(cfg).check_prompts(cfg)  # hub: every prompt fits the policy's context
        if cfg.coarse.reward_model:
            hub.resolve_model(cfg.coarse.reward_model, "coarse.reward_model")
        elif "reward" not in cfg.stages:
            fix = "add reward to stages (stages=[prepare,reward,coarse])"
            raise ConfigError(f"coarse needs a reward model: {fix} or set coarse.reward_model")

    def run(self, ctx: StageContext, out: Path) -> dict[str, Any]:
        import torch

        from c2f_exp.coarse import critic, ppo
        from c2f_exp.coarse.engines import build_engine
        from c2f_exp.coarse.experience import load_prompts, make_reward_fn
        from c2f_exp.coarse.gold_rewards import build_monitor
        from c2f_exp.coarse.length_schedules import build_schedule
        from c2f_exp.coarse.rollout import stop_sequences
        from c2f_exp.coarse.traces import write_traces
        from c2f_exp.coarse.trainer import CoarseTrainer, TrainerParts
        from c2f_exp.core.model_card import write_model_card
        from c2f_exp.core.tokenizers import save_tokenizer

        cfg, c = ctx.cfg, ctx.cfg.coarse
        base, rm_ref = model_dir(ctx, "base"), reward_model(ctx)
        prep = _prepared(ctx) if source_for(cfg).reads_prepare else None
        texts, reward_prompts, eval_rows = load_prompts(cfg, prep)
        acc = critic.build_accelerator(cfg.distributed, c)
        torch.manual_seed(rl_seed(cfg) + acc.process_index)  # each process: its own rollouts
        tok = load_tokenizer(base, "left")  # Mistral's has no pad token: <unk> pads
        model, ref, rm, rm_tok = critic.build_models(acc, base, rm_ref, c)
        reward_fn = make_reward_fn(rm, rm_tok, tok, c.forward_batch_size)
        kl_ctl = ppo.build_kl_controller(c.kl_controller, c.kl_coef, c.kl_target, c.kl_horizon)
        schedule, prefix = build_schedule(cfg.length_schedule), c.prompt_prefix
        prefix = prefix.format(bos=tok.bos_token or "")
        monitor = build_monitor(cfg, tok, acc, prep)  # None unless coarse.gold_every > 0
        engine = build_engine(c, base, rl_seed(cfg))  # hf | vllm (coarse.rollout.engine)
        engine.stop = stop_sequences(tok, source_for(cfg).turn_marker)  # ends rows beside EOS
        parts = TrainerParts(
            accelerator=acc,
            model=model,
            ref_model=ref,
            reward_fn=reward_fn,
            schedule=schedule,
            kl_ctl=kl_ctl,
            tok=tok,
            prompts=texts,
            prefix=prefix,
            work_dir=ctx.work_dir,
            log_fn=ctx.tracker.log,
            seed=rl_seed(cfg),
            reward_prompts=reward_prompts,
            monitor=monitor,
            engine=engine,
        )
        trainer = CoarseTrainer(c, parts)
        trainer.logged_steps = logged_steps(ctx.stage_dir / "metrics.jsonl")
        state = trainer.train()
        full = acc.get_state_dict(trainer.model)  # gathers ZeRO-3 shards: every rank calls it
        metrics = {"steps": state.step, "bad_batches": state.bad_batches}
        metrics.update(tokens_generated=state.tokens, resumed_from_step=state.resumed_from)
        if acc.is_main_process:
            # the trained weights as they are: under bf16 autocast the fp32 master weights, so
            # the RL residue (coarse - base, often below bf16's resolution) reaches the merge
            sd = {k.removeprefix("policy."): v for k, v in full.items() if k[:7] == "policy."}
            acc.unwrap_model(trainer.model).policy.save_pretrained(out / "actor", state_dict=sd)
            save_tokenizer(tok, out / "actor")  # a tokenizer class transformers 4.46+ loads
            metrics.update(write_traces(state, out, monitor is not None))
            if state.samples:
                layout.write_jsonl(out / "samples.jsonl", state.samples)
            last = state.trace[-1] if state.trace else {}
            metrics.update({f"final_{k}": last.get(k) for k in FINAL})
            if eval_rows:
                metrics.update(gold_eval(ctx, base, out / "actor", eval_rows))
            write_model_card(
                out / "actor",
                role="coarse",
                description="PPO with Continuous Maximization from `policy`, scored by `reward`.",
                parents={"policy": base, "reward": rm_ref},
                tags=["ppo", "rlhf"],
                recipe={"length_schedule": dataclasses.asdict(cfg.length_schedule)},
                metrics=metrics,
            )
            ctx.tracker.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        acc.wait_for_everyone()
        return metrics


def logged_steps(path: Path) -> set[int]:
    """Iterations whose row a metrics.jsonl already holds (a resume into the same run dir)."""
    import json

    steps = set()
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:  # a kill mid-write may leave a partial last line
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "limit" in row and isinstance(row.get("step"), int):
            steps.add(row["step"])
    return steps


def reward_model(ctx: StageContext) -> str:
    """The frozen reward model: `coarse.reward_model`, else the reward stage's artifact.

    Raises ConfigError if it is no one-output classifier or its vocabulary is not the policy's.
    """
    from c2f_exp.reward import model as rmod

    c, base = ctx.cfg.coarse, model_dir(ctx, "base")
    if c.reward_model:
        ref, key = hub.resolve_model(c.reward_model, "coarse.reward_model"), "coarse.reward_model"
    elif "reward" in ctx.upstream:
        ref, key = rmod.reward_model_ref(Path(ctx.upstream["reward"]["path"])), "reward"
    else:
        raise ConfigError(
            "coarse needs a reward model: add reward to stages or set "
            "coarse.reward_model=/path/to/reward_model"
        )
    rmod.check_compatible(ref, base, key)
    return ref


def _prepared(ctx: StageContext) -> Path:
    if "prepare" not in ctx.upstream:
        fix = "add prepare to stages (stages=[prepare,reward,coarse])"
        raise ConfigError(f"the tiny world's coarse stage needs its prompts: {fix}")
    return Path(ctx.upstream["prepare"]["path"])


def gold_eval(ctx: StageContext, base: str, actor: Path, rows: list[dict]) -> dict[str, Any]:
    """Greedy answers of base and Coarse Actor on held-out prompts, scored by the gold scorer."""
    from transformers import AutoModelForCausalLM

    from c2f_exp.tinyworld import quality
    from c2f_exp.tinyworld.scorer import GoldScorer
    from c2f_exp.tinyworld.world import World

    scorer, ls = GoldScorer(World.load(layout.world_file(_prepared(ctx)))), ctx.cfg.length_schedule
    n = ctx.cfg.coarse.eval_max_new_tokens or ls.l_max or max(ls.limits)
    tok, out = load_tokenizer(base, "left"), {}
    for role, path in (("base", base), ("actor", str(actor))):
        model = AutoModelForCausalLM.from_pretrained(path)
        for k, v in quality.answer_quality(model, tok, scorer, rows, n, chat=False).items():
            out[f"{role}/heldout_{k}"] = v
    facts = [
        out[f"{r}/heldout_{k}"]
        for k in ("facts_per_answer", "gold_total_per_answer")
        for r in ("base", "actor")
    ]
    log.info(
        "per held-out answer: gold facts base %.2f, Coarse Actor %.2f; "
        "gold total base %.2f, Coarse Actor %.2f",
        *facts,
    )
    return out
