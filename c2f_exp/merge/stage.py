"""`merge` stage: the Fine Actor = instruct + lambda * filter(coarse - base) (docs/method.md §2.2).

Inputs come from `merger.base/instruct/coarse` when set (standalone:
`python -m c2f_exp stages=[merge] merger.base=... merger.instruct=... merger.coarse=...`), else
from the run: base/instruct from the prepare stage (or `model.*.path`), coarse from
`<coarse artifact>/actor`. The merged model is the stage artifact itself; `merger.output`
additionally receives an atomic copy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from c2f_exp.core import layout
from c2f_exp.core.artifacts import write_json_atomic
from c2f_exp.core.errors import bad_value
from c2f_exp.core.hub import check_weights
from c2f_exp.merge import inputs, io, output
from c2f_exp.merge.config import ROLES
from c2f_exp.stages import StageContext

if TYPE_CHECKING:
    from c2f_exp.config import C2FConfig

log = logging.getLogger(__name__)
RECIPE = "merge_recipe.json"


class MergeStage:
    name = "merge"
    checkpoints = False  # nothing to resume from: a failed build leaves no work dir

    def config_subtree(self, cfg: C2FConfig) -> dict[str, Any]:
        m = dataclasses.asdict(cfg.merger)
        sub: dict[str, Any] = {"merger": m, "inputs": {}}
        for role in ROLES[m["method"]]:  # explicit paths: hash what is there, not the path
            if m[role] and Path(m[role]).expanduser().is_dir():
                with contextlib.suppress(io.MergeError):  # preflight reports it
                    sub["inputs"][role] = io.ModelDir(m[role], f"merger.{role}").fingerprint()
            elif role != "coarse" and not m[role]:
                # null: the prepare artifact's hash
                sub["inputs"][role] = getattr(cfg.model, role).path
        return sub

    def preflight(self, cfg: C2FConfig) -> None:
        """Output directory and (when all inputs are paths) the models' architecture, tensors
        and lambda-list length, before any merge work. The config values themselves were
        checked once, before any stage, by `config.validate` (`MergerConf.__post_init__`)."""
        from c2f_exp.merge.stream import check_inputs

        m = cfg.merger
        known = {}
        for role in ROLES[m.method]:
            if getattr(m, role):
                known[role] = io.ModelDir(
                    io.local_model_dir(getattr(m, role), f"merger.{role}"), f"merger.{role}"
                )
                check_weights(known[role].path, f"merger.{role}")  # truncated/padded files
            elif role == "coarse" and "coarse" not in cfg.stages:
                raise bad_value(
                    "merger.coarse",
                    None,
                    "a model directory when the coarse stage does not run",
                    "set merger.coarse=/path/to/coarse_actor or add coarse to stages",
                )
            elif (
                role != "coarse"
                and not getattr(cfg.model, role).path
                and "prepare" not in cfg.stages
            ):
                raise bad_value(
                    f"merger.{role}",
                    None,
                    "a model directory when prepare does not run",
                    f"set merger.{role}=/path/to/model or add prepare to stages",
                )
        if "instruct" in known:
            inputs.check_tokenizer(known["instruct"])
        if "base" in known and "coarse" in known:
            inputs.check_residue_possible(known["base"], known["coarse"])
        if m.output:
            named = {r: getattr(cfg.model, r).path for r in ("base", "instruct")}
            named = {r: d for r, d in named.items() if d and Path(d).expanduser().is_dir()}
            named.update({r: md.path for r, md in known.items()})
            output.check_output_dir(m.output, m.overwrite, output.protected_dirs(cfg, named))
        if len(known) == len(ROLES[m.method]):
            check_inputs(known, m)

    def run(self, ctx: StageContext, out: Path) -> dict[str, Any]:
        from c2f_exp.merge.stream import merge_models

        m = ctx.cfg.merger
        dirs = {role: self._input_dir(ctx, role) for role in ROLES[m.method]}
        log.info("merge %s: %s", m.method, dirs)
        recipe = merge_models(dirs, m, out)
        write_json_atomic(out / RECIPE, recipe)
        output.write_card(out, recipe, {r: self._input_ref(ctx, r, d) for r, d in dirs.items()})
        res = recipe["residue"]
        if res["survival"] is not None and res["survival"] < m.survival_warn:
            log.warning(
                "only %.1f%% of the residue survives the cast to %s (merger.survival_warn"
                "=%s): use merger.out_dtype=float32 or a larger merger.coefficient",
                100 * res["survival"],
                m.out_dtype or "the instruct dtype",
                m.survival_warn,
            )
        if m.output:
            keep = output.protected_dirs(ctx.cfg, dirs, ctx.run_dir)
            target = output.copy_model_dir(out, m.output, m.overwrite, keep)
            log.info("merged model also written to %s", target)
        metrics = {
            "method": m.method,
            "seconds": recipe["seconds"],
            "shards": recipe["shards"],
            "total_size": recipe["total_size"],
            "rss_anon_max_kb": recipe["rss_anon_max_kb"],
            "residue_l2": res["l2"],
            "residue_survival": res["survival"],
            "changed_fraction": res["changed_fraction"],
            "output": m.output,
        }
        ctx.tracker.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        return metrics

    @staticmethod
    def _input_ref(ctx: StageContext, role: str, local: str) -> str:
        """A Hub id the input was named by (for the card's `base_model`), else its directory."""
        ref = getattr(ctx.cfg.merger, role)
        if not ref and role != "coarse":
            ref = getattr(ctx.cfg.model, role).path
        return str(ref) if ref and not Path(str(ref)).expanduser().is_dir() else local

    @staticmethod
    def _input_dir(ctx: StageContext, role: str) -> str:
        ref = getattr(ctx.cfg.merger, role)
        if ref:
            return io.local_model_dir(ref, f"merger.{role}")
        if role == "coarse":
            if "coarse" not in ctx.upstream:
                raise bad_value(
                    "merger.coarse",
                    None,
                    "a model directory when the coarse stage does not run",
                    "set merger.coarse=/path/to/coarse_actor",
                )
            return str(layout.stage_model_dir("coarse", ctx.upstream["coarse"]["path"]))
        path = layout.model_dir(ctx.cfg, ctx.upstream, role)
        return io.local_model_dir(path, f"model.{role}.path")
