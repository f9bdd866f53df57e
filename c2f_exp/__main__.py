"""`python -m c2f_exp [overrides]`: compose the config, run the requested stages."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from c2f_exp.config import register
from c2f_exp.core.layout import hydra_config_path

log = logging.getLogger("c2f_exp")
register()


# ../conf in a checkout, pkg://c2f_exp.conf in an installed wheel (setup.py ships conf/ there)
@hydra.main(version_base="1.3", config_path=hydra_config_path(), config_name="config")
def _app(cfg: DictConfig) -> float | None:
    """Run one job. In a multirun a failing job is logged and recorded in its manifest.json,
    and the sweep goes on (SweepCallback reports failures when it ends); alone, a user error
    exits with status 2 and one line. Returns `sweep.objective` for optimising sweepers."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from c2f_exp import cli_errors, launch
    from c2f_exp.core import secrets
    from c2f_exp.core.errors import C2FError
    from c2f_exp.pipeline import run_pipeline
    from c2f_exp.sweeping import objective_value

    cli_errors.job_started()
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    if hc.output_subdir:  # Hydra saved the config and overrides as typed: redact them first
        secrets.scrub_hydra_dir(run_dir / str(hc.output_subdir))
    if multirun:
        secrets.scrub_yaml(Path(str(hc.sweep.dir)) / "multirun.yaml")
    if cfg.sweep.name and not multirun:
        log.warning("sweep=%s without -m runs one job with the defaults: add -m", cfg.sweep.name)
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    try:
        if cfg.plan:  # what the run would cost, before any GPU hour: nothing is trained
            from c2f_exp.config import validate
            from c2f_exp.pipeline import registry
            from c2f_exp.plan import print_plan

            print_plan(validate(cfg, tuple(registry())))  # the typed config, every rule checked
            return None
        n_ranks = launch.ranks_to_start(cfg)  # distributed without a launcher: start ranks
        if n_ranks:
            rc = launch.launch(n_ranks, list(hc.overrides.task), run_dir)
            if rc and not multirun:
                raise SystemExit(rc)
            return objective_value(cfg, _read_manifest(run_dir)) if multirun else None
        manifest = run_pipeline(cfg, run_dir)
    except C2FError as e:
        if full_error:
            raise
        msg = secrets.redact_text(str(e))  # e.g. a judge URL with user:pass@
        log.error("%s", msg)
        print(f"error: {msg}", file=sys.stderr)
        if multirun:
            return objective_value(cfg, None)
        raise SystemExit(2) from None
    except Exception:
        if not multirun or full_error:
            raise
        log.exception("job failed (recorded in %s)", run_dir / "manifest.json")
        return objective_value(cfg, None)
    for s in manifest["stages"]:
        log.info("%-8s %-6s %6.1fs  %s", s["stage"], s["status"], s["seconds"], s["path"])
    log.info("manifest: %s", run_dir / "manifest.json")
    return objective_value(cfg, manifest)


def _read_manifest(run_dir: Path) -> dict | None:
    import json

    try:
        return json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def main() -> None:
    from c2f_exp import cli_errors

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cli_errors.install()  # composition errors (typos, wrong types): one line, exit 2
    _app()


if __name__ == "__main__":
    main()
