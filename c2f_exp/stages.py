"""What every stage is: the `Stage` protocol and the `StageContext` it runs in.

Each stage lives in its own package (`c2f_exp/<stage>/stage.py`) beside its parts; the
registry of them is `pipeline.registry()`, which owns the stage order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from omegaconf import DictConfig, ListConfig, OmegaConf

from c2f_exp.core.tracking import Tracker

if TYPE_CHECKING:
    from c2f_exp.config import C2FConfig


@dataclass
class StageContext:
    """What a stage gets: the typed config, where to write, the tracker, upstream artifacts."""

    cfg: C2FConfig  # config.typed: the schema's dataclasses, every rule already checked
    run_dir: Path
    stage_dir: Path  # <run_dir>/<stage>/: logs, metrics.jsonl
    work_dir: Path  # survives crashes (checkpoints for resume); removed when the stage is done
    tracker: Tracker
    upstream: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> manifest entry
    final_dir: Path | None = None  # where `out` is renamed to when the stage completes


def final_dir(ctx: StageContext, out: Path) -> Path:
    """Where the artifact being built in `out` will live (the pipeline renames `out` there when
    the stage completes): files that name their own path (lm-eval task YAMLs, model cards)
    write this, not the temp dir. `out` itself for a stage run outside the pipeline."""
    return Path(ctx.final_dir) if ctx.final_dir is not None else out


class Stage(Protocol):
    name: str

    def config_subtree(self, cfg: C2FConfig) -> dict[str, Any]:
        """The part of the config the stage's output depends on (hashed for reuse)."""

    def preflight(self, cfg: C2FConfig) -> None:
        """Cheap checks (paths, hub reachability) run for all stages before any stage runs."""

    def run(self, ctx: StageContext, out: Path) -> dict[str, Any]:
        """Build the artifact in `out` (a temp dir renamed into place after). Returns metrics."""


def model_dir(ctx: StageContext, role: str) -> str:
    """Where the run's `base` or `instruct` model lives (layout.model_dir's rule: the config
    path, the prepare artifact's copy, or the rehearsal's tiny-width copy)."""
    from c2f_exp.core import layout

    return layout.model_dir(ctx.cfg, ctx.upstream, role)


def subtree(nodes: dict[str, Any]) -> dict[str, Any]:
    """A stage's config subtree as plain containers (choices stay enums, which hash as their
    values): typed nodes as they are, OmegaConf nodes resolved where they sit (a node copied
    into a new root loses its interpolations' targets)."""
    plain = {k: _plain(v) for k, v in nodes.items()}
    return OmegaConf.to_container(OmegaConf.create(plain), resolve=True)


def _plain(v: Any) -> Any:
    if isinstance(v, (DictConfig, ListConfig)):
        return OmegaConf.to_container(v, resolve=True)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return dataclasses.asdict(v)
    return v


def distributed_key(cfg: C2FConfig) -> dict[str, Any]:
    """What of `distributed` a trained artifact depends on, for its config subtree: nothing in
    one process (so single-process cache keys stay as they were), else the backend, ZeRO stage
    and number of ranks (they change batch sharding, reduction order and precision)."""
    d = cfg.distributed
    if str(d.backend) == "none":
        return {}
    return {"distributed": {k: getattr(d, k) for k in ("backend", "zero_stage", "num_processes")}}
