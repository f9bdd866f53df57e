"""Checks that need a CUDA GPU (marker `gpu`; skipped without one, never in CI).

Run on a GPU node: `pytest -m gpu tests/gpu -s` (-s shows the throughput lines). Each runs the
7B recipe's rehearsal (tests/helpers/realformat.py: Mistral-7B-v0.1's real config and
tokenizer at tiny widths, HH-RLHF stand-ins, the real MT-Bench questions, a local judge):

* in bf16 on one GPU (`distributed=none`): the fp32-master-weight path under CUDA autocast;
* with `distributed=zero3` and no launcher: `python -m c2f_exp` starts one rank per visible GPU;
* with `coarse.rollout.engine=vllm` where vllm is installed;

and prints rollout (generation) and update tokens/s per engine from the coarse stage's
metrics, so the numbers can go into a note with the card that made them.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch

from tests.conftest import read_manifest, run_cli
from tests.helpers.realformat import rehearsal_env, rehearsal_inputs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _rehearse(tmp: Path, *extra: str) -> dict:
    args, server = rehearsal_inputs(tmp)
    try:
        proc = run_cli([*args, *extra], tmp, env=rehearsal_env(), timeout=1800)
    finally:
        server.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_manifest(tmp)


def _rates(tmp: Path) -> dict[str, float]:
    rows = [
        json.loads(x) for x in (tmp / "run" / "coarse" / "metrics.jsonl").read_text().splitlines()
    ]
    rows = [r for r in rows if "gen_tokens_per_s" in r]
    return {
        "rollout_tokens_per_s": statistics.median(r["gen_tokens_per_s"] for r in rows),
        "iteration_tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
    }


def test_rehearsal_bf16_on_one_gpu(tmp_path):
    m = _rehearse(tmp_path, "distributed=none")
    assert [s["status"] for s in m["stages"]] == ["done"] * 5
    print(f"\n[hf engine, bf16, {torch.cuda.get_device_name(0)}] {_rates(tmp_path)}")


def test_zero3_starts_one_rank_per_gpu(tmp_path):
    m = _rehearse(tmp_path, "distributed=zero3", "stages=[prepare,reward,coarse]")
    assert [s["status"] for s in m["stages"]] == ["done"] * 3
    logs = sorted((tmp_path / "run" / "ranks").rglob("*.log"))
    assert len({p.parent for p in logs}) >= torch.cuda.device_count()


def test_vllm_rollouts(tmp_path):
    pytest.importorskip("vllm")
    _rehearse(
        tmp_path,
        "distributed=none",
        "coarse.rollout.engine=vllm",
        "stages=[prepare,reward,coarse]",
    )
    print(f"\n[vllm engine, bf16, {torch.cuda.get_device_name(0)}] {_rates(tmp_path)}")
