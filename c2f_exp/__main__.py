"""`python -m c2f_exp [overrides]`: compose the config, run the requested stages."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from c2f_exp.config import register

log = logging.getLogger("c2f_exp")
register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def _app(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from c2f_exp.errors import C2FError
    from c2f_exp.pipeline import run_pipeline

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        manifest = run_pipeline(cfg, run_dir)
    except C2FError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    for s in manifest["stages"]:
        log.info("%-8s %-6s %6.1fs  %s", s["stage"], s["status"], s["seconds"], s["path"])
    log.info("manifest: %s", run_dir / "manifest.json")


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _app()


if __name__ == "__main__":
    main()
