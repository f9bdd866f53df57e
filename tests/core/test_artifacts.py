"""Atomic artifact directories, hashing and the claim lock."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest

from c2f_exp.core import artifacts
from c2f_exp.core.tracking import REDACTED, redact


def test_hash_is_stable_and_order_free():
    assert artifacts.config_hash({"a": 1, "b": [1, 2]}) == artifacts.config_hash(
        {"b": [1, 2], "a": 1}
    )
    assert artifacts.config_hash({"a": 1}) != artifacts.config_hash({"a": 2})


def test_atomic_dir_success(tmp_path):
    final = tmp_path / "art"
    with artifacts.atomic_dir(final) as tmp:
        (tmp / "x").write_text("1")
        assert not final.exists()
    assert artifacts.is_complete(final) and (final / "x").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["art"]


def test_atomic_dir_crash_leaves_nothing_complete(tmp_path):
    final = tmp_path / "art"
    with pytest.raises(RuntimeError), artifacts.atomic_dir(final) as tmp:
        (tmp / "half").write_text("partial")
        raise RuntimeError("killed mid-write")
    assert not final.exists() and list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_old(tmp_path):
    final = tmp_path / "art"
    for v in ("1", "2"):
        with artifacts.atomic_dir(final) as tmp:
            (tmp / "v").write_text(v)
    assert (final / "v").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["art"]


def _hold(path, q):
    with artifacts.claim(path):
        q.put("held")
        time.sleep(1.0)


def test_claim_is_exclusive_across_processes(tmp_path):
    q = mp.get_context("fork").Queue()
    p = mp.get_context("fork").Process(target=_hold, args=(tmp_path / "a", q))
    p.start()
    assert q.get(timeout=10) == "held"
    t0 = time.monotonic()
    with artifacts.claim(tmp_path / "a"):
        waited = time.monotonic() - t0
    p.join()
    assert waited > 0.3  # we could only enter after the other process let go


def test_redact_secrets():
    cfg = {
        "judge": {"api_key": "sk-123", "api_key_env": "OPENAI_API_KEY", "model": "gpt"},
        "wandb_token": None,
        "items": [{"password": "x"}],
    }
    out = redact(cfg)
    assert out["judge"] == {"api_key": REDACTED, "api_key_env": "OPENAI_API_KEY", "model": "gpt"}
    assert out["wandb_token"] is None and out["items"][0]["password"] == REDACTED
