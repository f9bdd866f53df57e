"""Shared fixtures: config composition and running the CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


@pytest.fixture
def compose():
    """compose(overrides) -> DictConfig, with the project's schema registered."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    from c2f_exp.config import register

    register()

    def _run(overrides: list[str] | None = None):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return _compose(config_name="config", overrides=overrides or [])

    return _run


def run_cli(args: list[str], tmp: Path, env: dict | None = None, timeout: int = 600):
    """Run `python -m c2f_exp` with outputs under `tmp`; returns CompletedProcess."""
    full_env = {**os.environ, "TQDM_DISABLE": "1", "WANDB_SILENT": "true", **(env or {})}
    cmd = [
        sys.executable,
        "-m",
        "c2f_exp",
        f"hydra.run.dir={tmp}/run",
        f"paths.cache_dir={tmp}/cache",
        *args,
    ]
    return subprocess.run(
        cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def read_manifest(tmp: Path) -> dict:
    return json.loads((tmp / "run" / "manifest.json").read_text())
