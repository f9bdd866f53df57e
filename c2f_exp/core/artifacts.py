"""Content-addressed stage artifacts: hashing, atomic directory writes, a claim lock.

An artifact lives at `<cache_dir>/<stage>/<key>/` where `key` hashes the stage's config subtree
and its inputs' keys. It is built in a temp directory next to it and renamed into place only
when complete (`DONE` marker inside), so a crash never leaves a complete-looking artifact.
A lock file per key lets parallel sweep jobs wait for one builder and then reuse its result.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from c2f_exp.core.errors import C2FError, ConfigError
from c2f_exp.core.layout import MODEL_DIRS, MODEL_REF  # role -> subdir of each stage's artifact

DONE = "DONE"
# Failures of a write that say "this disk/path cannot take it" (not a bug): named errors.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)


class ArtifactWriteError(C2FError):
    """An artifact or checkpoint could not be written (disk full, no permission)."""

    @classmethod
    def from_os_error(cls, e: OSError, art: Path) -> ArtifactWriteError:
        path = e.filename or art
        free = _free_mb(art)
        return cls(
            f"cannot write {path} ({e.strerror or e}); the previous artifact at {art}, if any, "
            f"is intact; {free} free there; free space or set paths.cache_dir=/a/larger/disk"
        )


# How a full disk reads when it does not arrive as an OSError: torch.save's RuntimeError
# ("PytorchStreamWriter failed writing file ...: file write failed") and safetensors' errors
# ("IoError(... StorageFull, message: \"No space left on device\")").
_WRITE_FAILED = re.compile(
    r"file write failed|No space left|Disk quota exceeded|Read-only file system|StorageFull"
)


def write_error(e: BaseException, art: Path) -> ArtifactWriteError | None:
    """The named error for a failed write of artifact `art` (or of a checkpoint beside it),
    whether it came as an OSError or as a library's RuntimeError; None for other errors."""
    if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
        return ArtifactWriteError.from_os_error(e, art)
    if not isinstance(e, OSError) and _WRITE_FAILED.search(str(e)):
        first = (str(e).strip().splitlines() or [""])[-1].strip()
        return ArtifactWriteError.from_os_error(OSError(errno.ENOSPC, first), art)
    return None


def _free_mb(path: Path) -> str:
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return f"{shutil.disk_usage(p).free / 2**20:.0f} MiB"
    except OSError:
        return "unknown space"


@functools.cache
def package_version() -> str:
    """The installed c2f_exp version: part of every cache key, so an upgraded install never
    reuses artifacts built by older code (no hand-bumped constant to forget)."""
    try:
        return importlib.metadata.version("c2f_exp")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def model_dirs(stage: str, art: Path) -> dict[str, str]:
    """role -> model directory (or hub id) a finished stage artifact holds, for manifest.json."""
    out = {}
    for role, sub in MODEL_DIRS.get(stage, {}).items():
        d = art / sub if sub else art
        if (d / "config.json").is_file():
            out[role] = str(d)
    ref = art / MODEL_REF  # a reward stage that points at a hub reward model
    if stage == "reward" and "reward" not in out and ref.is_file():
        out["reward"] = json.loads(ref.read_text())["ref"]
    return out


def config_hash(obj: Any) -> str:
    """Stable 16-hex-digit hash of a JSON-able object (dict keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(f"{package_version()}:{blob}".encode()).hexdigest()[:16]


def is_complete(path: Path) -> bool:
    return (path / DONE).is_file()


@contextlib.contextmanager
def claim(path: Path) -> Iterator[None]:
    """Exclusive lock for building artifact `path` (blocks while another process holds it)."""
    _stage_dir(path.parent)
    with file_lock(path.with_name(path.name + ".lock")):
        yield


@contextlib.contextmanager
def file_lock(lock: Path) -> Iterator[None]:
    """An exclusive `flock` on the file `lock` (created if missing) for the block; the kernel
    releases it when the process dies, so a killed holder never blocks the next one."""
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _stage_dir(d: Path) -> None:
    """Create `<cache>/<stage>`; a regular file in its place is a named error, not a
    FileExistsError traceback after the upstream stages have trained."""
    blocker = next((p for p in (d, *d.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ConfigError(
            f"{blocker} is a file where the artifact cache needs a directory ({d}); move or "
            "delete it, or set paths.cache_dir=/another/dir"
        )
    d.mkdir(parents=True, exist_ok=True)


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


def clear_orphans(final: Path) -> list[Path]:
    """Remove `.tmp-<key>-*` / `.old-<key>-*` dirs left by killed builds of artifact `final`.

    Call it holding `claim(final)`: every builder of this key holds that lock while its temp
    dir exists, so any temp dir seen under the lock belongs to a dead process."""
    gone = []
    for pattern in (f".tmp-{final.name}-*", f".old-{final.name}-*"):
        for p in final.parent.glob(pattern):
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p)
    return gone


def check_writable(path: Path, key: str) -> Path:
    """`path` as a directory this process can write (created if missing), else ConfigError:
    checked at preflight, before wandb starts or anything trains."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as e:
        raise ConfigError(
            f"{key}={path} is not a writable directory ({type(e).__name__}: "
            f"{e.strerror or e}); set {key}=/a/writable/dir"
        ) from None
    return path


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)
