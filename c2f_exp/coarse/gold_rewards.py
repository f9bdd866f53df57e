"""The overoptimization monitor's gold rewards (a registry) and the monitor the trainer calls.

`coarse.gold_source` picks what "gold" means:

* `tinyworld_gold` — the tiny world's gold scorer (c2f_exp/tinyworld/scorer.py): each rollout is
  decoded, matched to the animal its prompt asks about and scored; gold total = correct +
  ½ explained − wrong − ¼ repeats − ¼ unparsed (`Score.total`), plus the fact counts.
* `reward_model` — a second, held-out reward model (`coarse.gold_reward_model`, e.g. a larger RM
  for real runs), read through the same text interface as the training reward model.

Each entry has a `check(cfg)` run at preflight (a one-line ConfigError naming the key and fix)
and a `build(cfg, tok, acc, prepared)` returning `source(prompts, rollout) -> {key: (B,)}` with
"total" and optionally the counts in `gold_monitor.COUNTS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from c2f_exp.coarse import gold_monitor as gm
from c2f_exp.core.errors import bad_value

if TYPE_CHECKING:
    import torch

    from c2f_exp.coarse.config import CoarseConf

log = logging.getLogger(__name__)
GoldSource = Callable[[list, Any], dict[str, Any]]  # (prompts, rollout) -> {key: (B,) tensor}
FIX_OFF = "or coarse.gold_every=0 to turn the monitor off"


@dataclass(frozen=True)
class SourceSpec:
    check: Callable[[Any], None]  # root cfg -> None, raises ConfigError
    build: Callable[[Any, Any, Any, Path | None], GoldSource]  # cfg, policy tok, acc, prepared


def _check_tinyworld(cfg: Any) -> None:
    from c2f_exp.sources import source_for

    if not source_for(cfg).has_gold_scorer:
        fix = "set coarse.gold_source=reward_model and coarse.gold_reward_model=/path/to/rm"
        raise bad_value(
            "coarse.gold_source",
            cfg.coarse.gold_source,
            f"reward_model outside the tiny world (data.source={cfg.data.source})",
            f"{fix}, {FIX_OFF}",
        )


def _build_tinyworld(cfg: Any, tok: Any, acc: Any, prepared: Path | None) -> GoldSource:
    import torch

    from c2f_exp.coarse.experience import decode_responses
    from c2f_exp.core.layout import data_file, read_jsonl, world_file
    from c2f_exp.tinyworld.scorer import GoldScorer
    from c2f_exp.tinyworld.world import World

    scorer = GoldScorer(World.load(world_file(prepared)))
    subject = {
        r["prompt"]: r["entity"] for r in read_jsonl(data_file(prepared, "ppo_prompts.jsonl"))
    }

    def source(prompts: list, rollout: Any) -> dict[str, torch.Tensor]:
        texts = decode_responses(tok, rollout)
        scores = [scorer.score(t, subject.get(p)) for p, t in zip(prompts, texts, strict=True)]
        out = {"total": [s.total() for s in scores]}
        out.update({k: [float(getattr(s, k)) for s in scores] for k in gm.COUNTS})
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in out.items()}

    return source


def _check_reward_model(cfg: Any) -> None:
    from c2f_exp.core import hub

    ref = cfg.coarse.gold_reward_model
    if not ref:
        want = "a held-out reward model (directory or hub id) for coarse.gold_source=reward_model"
        fix = "set coarse.gold_reward_model=/path/to/rm (a second, e.g. larger, reward model)"
        raise bad_value("coarse.gold_reward_model", ref, want, f"{fix}, {FIX_OFF}")
    hub.resolve_model(ref, "coarse.gold_reward_model")


def _build_reward_model(cfg: Any, tok: Any, acc: Any, prepared: Path | None) -> GoldSource:
    import torch

    from c2f_exp.coarse.experience import make_reward_fn
    from c2f_exp.core import hub
    from c2f_exp.reward.model import load_reward_model

    c = cfg.coarse
    ref = hub.resolve_model(c.gold_reward_model, "coarse.gold_reward_model")
    rm, rm_tok = load_reward_model(ref, getattr(torch, c.dtype))
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    if plugin is not None and plugin.zero_stage == 3:  # sharded like the training RM
        from trl.models.utils import prepare_deepspeed

        rm = prepare_deepspeed(rm, acc)
    else:
        rm = rm.to(acc.device)
    score = make_reward_fn(rm, rm_tok, tok, c.forward_batch_size)
    return lambda prompts, rollout: {"total": score(prompts, rollout)}


SOURCES: dict[str, SourceSpec] = {
    "tinyworld_gold": SourceSpec(_check_tinyworld, _build_tinyworld),
    "reward_model": SourceSpec(_check_reward_model, _build_reward_model),
}


def check_gold_source(cfg: Any) -> None:
    """Preflight: the chosen source has what it needs (a no-op when the monitor is off)."""
    if cfg.coarse.gold_every:
        SOURCES[cfg.coarse.gold_source].check(cfg)


class GoldMonitor:
    """Scores every `every`-th batch (and the last iteration's) with a gold source.

    `gather(t)` collects a per-process (B_local,) tensor into the global (B,) one on every
    process, so each process computes the same row and the same stop decision.
    """

    def __init__(self, source: GoldSource, c: CoarseConf, gather: Callable[[torch.Tensor], Any]):
        self.source, self.gather = source, gather
        self.every, self.last, self.early_stop = c.gold_every, c.steps - 1, c.early_stop_on_gold
        self.window, self.min_drop = c.gold_window, c.gold_min_drop

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.last

    def observe(self, step: int, prompts: list, rollout: Any, rm: Any, kl: Any) -> dict:
        """One monitor row. rm: (B,) gathered RM scores; kl: (B,) gathered per-sequence KL."""
        gold = {
            k: self.gather(v).float().cpu().tolist()
            for k, v in self.source(prompts, rollout).items()
        }
        row = gm.monitor_row(step, kl.tolist(), rm.tolist(), gold)
        log.info(
            "gold monitor, step %d: RM %.3f, gold total %.3f, spearman %.2f, KL %.2f",
            *(row[k] for k in ("step", "rm_score", "gold_total", "spearman", "kl")),
        )
        return row

    def should_stop(self, rows: list[dict]) -> bool:
        """`coarse.early_stop_on_gold` and `gold_monitor.overoptimized` on the history."""
        if not self.early_stop:
            return False
        gold, rm = [r["gold_total"] for r in rows], [r["rm_score"] for r in rows]
        return gm.overoptimized(gold, rm, self.window, self.min_drop)


def build_monitor(cfg: Any, tok: Any, acc: Any, prepared: Path | None) -> GoldMonitor | None:
    """The monitor of `coarse.gold_*`, or None when `coarse.gold_every` is 0."""
    c = cfg.coarse
    if not c.gold_every:
        return None
    source = SOURCES[c.gold_source].build(cfg, tok, acc, prepared)

    def gather(t: torch.Tensor) -> torch.Tensor:
        return acc.gather(t.to(acc.device)).cpu()

    return GoldMonitor(source, c, gather)
