"""Content-addressed stage artifacts: hashing, atomic directory writes, a claim lock.

An artifact lives at `<cache_dir>/<stage>/<key>/` where `key` hashes the stage's config subtree
and its inputs' keys. It is built in a temp directory next to it and renamed into place only
when complete (`DONE` marker inside), so a crash never leaves a complete-looking artifact.
A lock file per key lets parallel sweep jobs wait for one builder and then reuse its result.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DONE = "DONE"
CODE_VERSION = "1"  # bump when a stage's output changes for the same config


# Model directories inside each stage's artifact (role -> subdirectory; "" = the artifact itself).
MODEL_DIRS = {
    "prepare": {"base": "base", "instruct": "instruct"},
    "reward": {"reward": "model"},
    "coarse": {"coarse": "actor"},
    "merge": {"fine": ""},
}


def model_dirs(stage: str, art: Path) -> dict[str, str]:
    """role -> model directory (or hub id) a finished stage artifact holds, for manifest.json."""
    out = {}
    for role, sub in MODEL_DIRS.get(stage, {}).items():
        d = art / sub if sub else art
        if (d / "config.json").is_file():
            out[role] = str(d)
    ref = art / "model_ref.json"  # a reward stage that points at a hub reward model
    if stage == "reward" and "reward" not in out and ref.is_file():
        out["reward"] = json.loads(ref.read_text())["ref"]
    return out


def config_hash(obj: Any) -> str:
    """Stable 16-hex-digit hash of a JSON-able object (dict keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(f"{CODE_VERSION}:{blob}".encode()).hexdigest()[:16]


def is_complete(path: Path) -> bool:
    return (path / DONE).is_file()


@contextlib.contextmanager
def claim(path: Path) -> Iterator[None]:
    """Exclusive lock for building artifact `path` (blocks while another process holds it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temp dir; on success mark it DONE and rename it to `final` (replacing any)."""
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}-{time.time_ns()}")
    tmp.mkdir(parents=True)
    try:
        yield tmp
        (tmp / DONE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
        if final.exists():
            old = final.with_name(f".old-{final.name}-{time.time_ns()}")
            final.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)
