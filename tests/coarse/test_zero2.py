"""The coarse stage for a few steps in 2 CPU processes under DeepSpeed ZeRO-2 (slow).

`accelerate launch --use_deepspeed --zero_stage 2 --num_processes 2` runs the stage driver of
tests/coarse/test_coarse.py. The first DeepSpeed init on CPU JIT-compiles a communication op
(~100 s); it is cached in $TORCH_EXTENSIONS_DIR (default here: ~/.cache/c2f_exp/torch_extensions).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers import ROOT
from tests.helpers.coarse import build_micro_world, coarse_cfg, read_trace

STEPS = 3


@pytest.mark.slow
def test_coarse_under_zero2_in_two_cpu_processes(tmp_path):
    up = build_micro_world(tmp_path)
    cfg = coarse_cfg(
        {
            "coarse": {
                "steps": STEPS,
                "batch_size": 8,
                "minibatch_size": 4,
                "checkpoint_every": 2,
                "eval_prompts": 2,
            }
        },
        distributed="zero2",
    )
    OmegaConf.save(cfg, tmp_path / "cfg.yaml")
    (tmp_path / "up.json").write_text(json.dumps(up))
    ext = os.environ.get(
        "TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "c2f_exp" / "torch_extensions")
    )
    env = {
        **os.environ,
        "TORCH_EXTENSIONS_DIR": ext,
        "TQDM_DISABLE": "1",
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "disabled",
    }
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--use_deepspeed",
        "--zero_stage",
        "2",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(ROOT / "tests" / "coarse" / "test_coarse.py"),
        str(tmp_path / "cfg.yaml"),
        str(tmp_path / "up.json"),
        str(tmp_path / "out"),
        str(tmp_path / "work"),
        str(tmp_path / "run"),
    ]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    printed = [x for x in res.stdout.splitlines() if x.startswith("METRICS ")]
    assert len(printed) == 1  # rank 0 only
    metrics = json.loads(printed[0].removeprefix("METRICS "))
    assert metrics["steps"] == STEPS and metrics["bad_batches"] == 0
    out = tmp_path / "out"
    assert (out / "actor" / "model.safetensors").is_file()
    assert [int(r["step"]) for r in read_trace(out)] == list(range(STEPS))
    logged = (tmp_path / "run" / "coarse" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(x)["step"] for x in logged if '"limit"' in x]
    assert steps == list(range(STEPS))  # one writer: no duplicate rows from rank 1
    shards = list((tmp_path / "work").rglob("*optim_states.pt"))
    assert len(shards) == 2, shards  # ZeRO-2: optimizer state sharded over both ranks

    # the same command with more steps resumes the ZeRO-2 checkpoint (sharded optimizer state)
    OmegaConf.save(OmegaConf.merge(cfg, {"coarse": {"steps": STEPS + 1}}), tmp_path / "cfg.yaml")
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    printed = [x for x in res.stdout.splitlines() if x.startswith("METRICS ")]
    metrics = json.loads(printed[0].removeprefix("METRICS "))
    assert metrics["resumed_from_step"] == 2 and metrics["steps"] == STEPS + 1
    assert [int(r["step"]) for r in read_trace(out)] == list(range(STEPS + 1))
