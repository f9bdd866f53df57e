"""The Coarse Actor's PPO loop: rollout under l(t), experience, PPO epochs, l(t+1), checkpoints.

One iteration t (docs/method.md §2.1): sample the global batch's prompts, generate under the
limit in force (engines.py: ours or vLLM), score with the frozen reward model (a NaN/inf batch is
skipped and counted), build the experience, run `ppo_epochs` passes of minibatch updates over
policy and critic (coarse/update.py; one optimizer, two parameter groups), then feed the batch's
pre-update statistics to the length schedule.
Every `coarse.gold_every` iterations an optional `monitor` (coarse/gold_rewards.py) also scores the
batch with a gold reward; its rows ride in the state (and checkpoints) and may stop the run.

Works in one process or under `accelerate launch` (DDP or DeepSpeed ZeRO): each process
generates its share of the batch; statistics the schedule sees are gathered, so every process
computes the same limit. Only the main process logs and writes trace files; checkpoints go
through `accelerator.save_state` (model as safetensors; optimizer and every process's RNG as
torch files accelerate loads with `weights_only=True`, so a resume runs no pickled code) plus
`trainer_state.json` (step, schedule, KL controller, trace, gold rows), into a temp dir renamed
into place.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from c2f_exp.coarse.critic import build_optimizer
from c2f_exp.coarse.engines import HFEngine
from c2f_exp.coarse.experience import Experience, check_scores, make_experience
from c2f_exp.coarse.length_schedules import LengthStats
from c2f_exp.coarse.rollout import encode_prompts
from c2f_exp.coarse.update import Head, head_forward, ppo_update
from c2f_exp.core.artifacts import write_json_atomic
from c2f_exp.core.errors import C2FError

if TYPE_CHECKING:
    from c2f_exp.coarse.config import CoarseConf

log = logging.getLogger(__name__)
STATE = "trainer_state.json"


@dataclass
class TrainState:
    step: int = 0  # next iteration to run
    bad_batches: int = 0
    tokens: int = 0  # generated tokens so far, all processes
    resumed_from: int | None = None
    trace: list[dict[str, Any]] = field(default_factory=list)
    gold: list[dict[str, Any]] = field(default_factory=list)  # overoptimization monitor rows
    stopped_on_gold: int | None = None  # iteration where coarse.early_stop_on_gold fired
    samples: list[dict[str, Any]] = field(default_factory=list)  # samples.jsonl rows


def latest_checkpoint(work_dir: Path) -> Path | None:
    """The newest complete checkpoint (`ckpt-*` holding trainer_state.json), or None."""
    done = sorted(p for p in work_dir.glob("ckpt-*") if (p / STATE).is_file())
    return done[-1] if done else None


@dataclass
class TrainerParts:
    """What the coarse stage builds for `CoarseTrainer` besides the `coarse` config."""

    accelerator: Any  # accelerate.Accelerator (plain, DDP or DeepSpeed)
    model: torch.nn.Module  # ActorCritic: the policy and critic PPO trains (not yet prepared)
    ref_model: Any  # the frozen reference policy (the base)
    reward_fn: Callable  # (reward prompts, rollout) -> (B,) scores
    schedule: Any  # LengthSchedule: the rollout length limit l(t)
    kl_ctl: Any  # fixed or adaptive KL coefficient (ppo.py)
    tok: Any  # the policy's tokenizer (left padding)
    prompts: list[str]  # plain prompt texts the policy answers
    prefix: str  # text before each prompt (coarse.prompt_prefix, {bos} filled in)
    work_dir: Path  # checkpoints
    log_fn: Callable[[dict, int], None]  # (metrics, step), main process only
    seed: int  # prompt order (epochs of seeded permutations)
    reward_prompts: list | None = None  # what the reward model reads; None: `prompts`
    monitor: Any = None  # GoldMonitor (gold_rewards.py), or None: no gold monitor
    engine: Any = None  # rollout engine (engines.py); None: HFEngine(c)


class CoarseTrainer:
    """PPO with a length schedule over `parts.prompts` (plain text; `parts.reward_prompts`:
    what the reward model reads, default the same), configured by `c` (the `coarse` config).
    `parts.log_fn(metrics, step)` runs on the main process only."""

    def __init__(self, c: CoarseConf, parts: TrainerParts):
        p = parts
        self.c, self.acc, self.ref, self.reward_fn = c, p.accelerator, p.ref_model, p.reward_fn
        self.schedule, self.kl_ctl, self.tok, self.prompts = p.schedule, p.kl_ctl, p.tok, p.prompts
        self.prefix, self.work_dir, self.log_fn, self.seed = p.prefix, p.work_dir, p.log_fn, p.seed
        self.reward_prompts, self.monitor = p.reward_prompts or p.prompts, p.monitor
        self.engine = p.engine or HFEngine(c)  # coarse/engines.py: hf | vllm
        n = self.acc.num_processes
        if c.batch_size % n or c.minibatch_size % n:
            msg = f"coarse.batch_size ({c.batch_size}) and minibatch_size ({c.minibatch_size})"
            raise ValueError(f"{msg} must be multiples of the {n} processes")
        self.local_batch, self.local_mb = c.batch_size // n, c.minibatch_size // n
        self.model, self.opt = self.acc.prepare(p.model, build_optimizer(p.model, c))
        self.state = TrainState()
        # steps the log already holds (a resume in the same run dir): not logged again on resume
        self.logged_steps: set[int] = set()

    # ---- one iteration -------------------------------------------------------------------
    def step_prompts(self, step: int) -> list[int]:
        """This process's prompt indices for iteration `step`: epochs of seeded permutations."""
        b, n = self.c.batch_size, len(self.prompts)
        lo, hi = step * b, (step + 1) * b
        gen, epochs = torch.Generator(), range(lo // n, (hi - 1) // n + 1)
        perms = {e: torch.randperm(n, generator=gen.manual_seed(self.seed + e)) for e in epochs}
        idx = [int(perms[g // n][g % n]) for g in range(lo, hi)]
        r = self.acc.process_index
        return idx[r * self.local_batch : (r + 1) * self.local_batch]

    @contextlib.contextmanager
    def _policy_for_generation(self) -> Iterator[torch.nn.Module]:
        inner = self.acc.unwrap_model(self.model)
        plugin = getattr(self.acc.state, "deepspeed_plugin", None)
        if plugin is not None and plugin.zero_stage == 3:  # gather the sharded weights
            import deepspeed
            from trl.models.utils import add_hooks, remove_hooks

            with deepspeed.zero.GatheredParameters(list(inner.policy.parameters())):
                remove_hooks(self.model)
                yield inner.policy
                add_hooks(self.model)
        else:
            yield inner.policy

    def run_step(self, step: int) -> dict[str, Any] | None:
        """One PPO iteration. Returns the logged row, or None for a skipped (bad) batch."""
        c, t0, tok, dev = self.c, time.time(), self.tok, self.acc.device
        idx = self.step_prompts(step)
        ids, mask = encode_prompts(tok, [self.prompts[i] for i in idx], self.prefix)
        limit = self.schedule.limit
        with self._policy_for_generation() as policy:
            ids, mask, special = ids.to(dev), mask.to(dev), (tok.eos_token_id, tok.pad_token_id)
            ro = self.engine.generate(policy, ids, mask, limit, *special)
        t_gen = time.time() - t0
        rm_prompts = [self.reward_prompts[i] for i in idx]
        scores = self.reward_fn(rm_prompts, ro).to(dev)
        all_scores = self.acc.gather(scores).cpu()
        if not check_scores(all_scores, self.state.bad_batches, c.max_bad_batches, step):
            self.state.bad_batches += 1
            return None
        perm0, head = self._head(ro)  # no RNG is drawn between here and the update
        exp = make_experience(self.model, self.ref, ro, scores, c, self.kl_ctl.value, head)
        upd = self.update(exp, perm0, head)
        per_seq = {"value": exp.values[:, 0], "trunc": ro.truncated, "len": ro.lengths}
        per_seq.update(kl=exp.kl.sum(1), seq_reward=exp.seq_rewards)
        per_seq["adv0"] = exp.returns[:, 0] - exp.values[:, 0]  # unwhitened first-token advantage
        g = {k: self.acc.gather(v.float()).cpu() for k, v in per_seq.items()}
        red = {k: self.acc.reduce(torch.tensor(v, device=dev), "mean") for k, v in upd.items()}
        upd = {k: float(v) for k, v in red.items()}
        if self.monitor is not None and self.monitor.due(step):  # gold vs. RM (gold_sources)
            self.state.gold.append(self.monitor.observe(step, rm_prompts, ro, all_scores, g["kl"]))
            if self.monitor.should_stop(self.state.gold):
                self.state.stopped_on_gold = step
        if self.acc.is_main_process and c.samples_every and step % c.samples_every == 0:
            self.state.samples += self._samples(step, idx, ro, scores, limit)
        r_mean, v_mean = all_scores.mean().item(), g["value"].mean().item()
        trunc = g["trunc"].mean().item()
        row = {"step": step, "limit": limit, "reward": r_mean, "value": v_mean}
        row.update(kl_coef=self.kl_ctl.value, kl=g["kl"].mean().item())
        self.kl_ctl.update(row["kl"], c.batch_size)
        stats = LengthStats(step, r_mean, v_mean, trunc, all_scores.tolist(), g["adv0"].tolist())
        row["advantage0"] = g["adv0"].mean().item()
        row["next_limit"] = self.schedule.update(stats)
        last = self.schedule.last
        row.update(gate=last.get("gate", float("nan")), z=last.get("z", float("nan")))
        row.update(truncation_rate=trunc, mean_response_length=g["len"].mean().item())
        row.update(reward_std=all_scores.std().item(), seq_reward=g["seq_reward"].mean().item())
        tokens, dt = int(g["len"].sum()), time.time() - t0
        self.state.tokens += tokens
        row.update(upd, tokens=tokens, tokens_total=self.state.tokens, seconds=dt)
        row.update(tokens_per_s=tokens / dt, gen_tokens_per_s=tokens / max(t_gen, 1e-9))
        return {**row, "bad_batches": self.state.bad_batches}

    def _samples(self, step: int, idx, ro, scores, limit: int) -> list[dict[str, Any]]:
        """This process's first `samples_per_step` rollouts as readable rows."""
        rows = []
        for j in range(min(self.c.samples_per_step, ro.response_ids.shape[0])):
            n = int(ro.response_mask[j].sum())
            text = self.tok.decode(ro.response_ids[j, :n].tolist(), skip_special_tokens=True)
            rows.append(
                {
                    "step": step,
                    "prompt": self.prompts[int(idx[j])],
                    "response": text,
                    "reward": float(scores[j]),
                    "limit": limit,
                    "tokens": n,
                    "truncated": bool(ro.truncated[j]),
                }
            )
        return rows

    def update(self, exp: Experience, perm0=None, head: Head | None = None) -> dict:
        """`ppo_epochs` passes of shuffled minibatch updates (update.py). Mean statistics."""
        return ppo_update(self.model, self.opt, self.acc, exp, self.c, self.local_mb, perm0, head)

    def _head(self, ro) -> tuple[torch.Tensor | None, Head | None]:
        """Epoch 0's permutation and its first minibatch's forward, when it can be reused."""
        plugin = getattr(self.acc.state, "deepspeed_plugin", None)
        if not self.c.rollout.reuse_first_forward or ro.logprobs is None:
            return None, None
        if plugin is not None or self.acc.num_processes > 1:  # engines wrap fwd/bwd there
            return None, None
        perm0 = torch.randperm(ro.response_ids.shape[0])  # what ppo_update would draw first
        return perm0, head_forward(self.model, ro, perm0[: self.local_mb])

    # ---- loop, checkpoints -----------------------------------------------------------------
    def train(self) -> TrainState:
        """Run (or resume) all iterations; returns the final state (trace included)."""
        from tqdm.auto import tqdm

        ckpt = latest_checkpoint(self.work_dir)
        c, main = self.c, self.acc.is_main_process
        if ckpt is not None:
            self.load_checkpoint(ckpt)
            if main:  # a fresh run dir's metrics.jsonl gets the rows logged before the kill
                for row in self.state.trace:
                    if row["step"] not in self.logged_steps:
                        self.log_fn(self.logged_row(row), row["step"])
        by_tokens = bool(c.token_budget)  # the bar counts what ends the run
        bar = tqdm(
            total=c.token_budget if by_tokens else c.steps,
            initial=self.state.tokens if by_tokens else self.state.step,
            desc="coarse PPO",
            unit=" tokens" if by_tokens else "it",
            unit_scale=by_tokens,
            disable=not main,
        )
        while not self.halted():
            step, tokens_before = self.state.step, self.state.tokens
            row = self.run_step(step)
            self.state.step += 1
            if row is not None:
                self.state.trace.append(row)
                if main:
                    self.log_fn(self.logged_row(row), step)
                length = f"{row['mean_response_length']:.0f}"
                bar.set_postfix(reward=f"{row['reward']:.2f}", limit=row["limit"], len=length)
            bar.update(self.state.tokens - tokens_before if by_tokens else 1)
            if not self.halted() and self.state.step % c.checkpoint_every == 0:
                self.save_checkpoint()
        bar.close()
        return self.state

    def logged_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """What `log_fn` gets for a trace row: the row plus its step's gold monitor row."""
        gold = [r for r in self.state.gold if r["step"] == row["step"]][-1:]
        return {**row, **{f"gold/{k}": v for r in gold for k, v in r.items() if k != "step"}}

    def budget_spent(self) -> bool:
        return bool(self.c.token_budget) and self.state.tokens >= self.c.token_budget

    def halted(self) -> bool:
        """All iterations run, the token budget spent, or stopped on the gold monitor."""
        st = self.state
        return st.step >= self.c.steps or self.budget_spent() or st.stopped_on_gold is not None

    def save_checkpoint(self) -> Path:
        """Write `ckpt-<step>` atomically: temp dir, then rename; keep the newest few."""
        acc, step = self.acc, self.state.step
        final, tmp = self.work_dir / f"ckpt-{step:06d}", self.work_dir / f".tmp-ckpt-{step:06d}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)  # weights: safetensors, never pickle
        acc.wait_for_everyone()
        if acc.is_main_process:
            extra = {"schedule": self.schedule.state_dict(), "kl": self.kl_ctl.state_dict()}
            write_json_atomic(tmp / STATE, {"train": asdict(self.state), **extra})
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            for old in sorted(self.work_dir.glob("ckpt-*"))[: -self.c.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
            log.info("checkpoint: %s", final)
        acc.wait_for_everyone()
        return final

    def load_checkpoint(self, path: Path) -> None:
        """Restore model, optimizer, RNG (accelerate) and step/schedule/KL/trace state."""
        d = json.loads((path / STATE).read_text())
        try:
            self.schedule.load_state_dict(d["schedule"])
        except ValueError as e:
            fix = f"remove {path.parent} to start over"
            raise C2FError(f"checkpoint {path} does not match this run ({e}); {fix}") from None
        self.kl_ctl.load_state_dict(d["kl"])
        self.acc.load_state(str(path))
        self.state = TrainState(**{**d["train"], "resumed_from": d["train"]["step"]})
        log.info("resumed from checkpoint %s (step %d of %d)", path, self.state.step, self.c.steps)
