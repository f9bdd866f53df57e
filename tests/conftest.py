"""Shared fixtures (config composition, tiny models and artifacts) and the CLI in a subprocess.

Plain builders that several modules share live in tests/helpers/ (imported, not collected).
"""

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
def compose(tmp_path):
    """compose(overrides) -> DictConfig, with the project's schema registered.

    Outside `hydra.main` no job runs, so `${hydra:runtime.*}` in conf/paths cannot resolve:
    the paths a job would get are set (root: the checkout; the run dir: under tmp_path)."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    from c2f_exp.config import register

    register()

    def _run(overrides: list[str] | None = None):
        overrides = list(overrides or [])
        for key, value in (("root_dir", ROOT), ("output_dir", tmp_path / "run")):
            if not any(o.lstrip("+~").startswith(f"paths.{key}=") for o in overrides):
                overrides.append(f"paths.{key}={value}")
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return _compose(config_name="config", overrides=overrides)

    return _run


@pytest.fixture
def conf(compose):
    """conf(overrides) -> the typed config the stages get (`config.typed`: every schema
    class's rules checked), as `compose` would build it."""
    from c2f_exp.config import typed

    return lambda overrides=None: typed(compose(overrides))


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


# -- tiny models and artifacts shared by several test modules -------------------------------
def tiny_mistral_config(**kw):
    """A `MistralConfig` for in-process test models (hidden 32, 2 layers, 2 heads of 16, one KV
    head, vocab 64, untied embeddings, no sliding window); keyword arguments override any field.
    """
    from transformers import MistralConfig

    base = {
        "vocab_size": 64,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 128,
        "sliding_window": None,
        "tie_word_embeddings": False,
    }
    return MistralConfig(**{**base, **kw})


@pytest.fixture
def torch_one_thread():
    """Tiny models run faster on one torch thread (much faster on shared, busy cores)."""
    from c2f_exp.evaluation.lineup import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory) -> Path:
    """A prepare-like artifact (world, data files, tiny base/instruct): tests.helpers.eval."""
    from tests.helpers.eval import build_tiny_artifact

    return build_tiny_artifact(tmp_path_factory.mktemp("prep"))


@pytest.fixture(scope="session")
def trio(tmp_path_factory) -> dict[str, str]:
    """base / instruct / coarse model dirs for merges (tests.helpers.merge.build_trio)."""
    from tests.helpers.merge import build_trio

    return build_trio(tmp_path_factory.mktemp("trio"))


@pytest.fixture(scope="session")
def micro(tmp_path_factory) -> dict:
    """The coarse tests' micro world: prepare/ (world, prompts, tiny base) and reward/ (a random
    reward model); returns `upstream` (tests.helpers.coarse.build_micro_world). Modules with
    their own micro world (test_reward.py, ...) define a `micro` fixture of their own."""
    from tests.helpers.coarse import build_micro_world

    return build_micro_world(tmp_path_factory.mktemp("micro_world"))
