"""The artifact cache: verify a reused artifact, and collect garbage.

Verification: when a stage builds an artifact, `fingerprint(dir)` records every file's size,
the sha256 of each safetensors header (8-byte length + JSON header: names, dtypes, shapes,
offsets) and the full sha256 of every small file (<= 1 MiB: configs, tokenizers, JSON results)
in `result.json` under `files`. Before reuse, `verify(dir)` recomputes them; a truncated,
padded, edited or missing file raises `CorruptArtifact` naming the file and what differs. The
pipeline then **rebuilds that artifact automatically** (a warning names the file; the damaged
copy is removed), so a sweep does not stop at job 37 for a file someone touched; the cost is
one header read per safetensors file. Same-size edits inside tensor data are not detected
(that would need a full hash of every weight file).

Garbage collection (`python -m c2f_exp.cache --gc [--cache-dir DIR] [--runs DIR ...]`):
  * always: `.tmp-*` / `.old-*` dirs (killed builds, interrupted replacements) and `.work`
    dirs of complete artifacts — each removed only while its artifact's lock is free;
  * `--work`: also `.work` dirs of incomplete artifacts (they hold resume checkpoints);
  * `--unused`: complete artifacts no `manifest.json` under `--runs` refers to.
`--dry-run` lists without removing. Exit status 0; one line per item.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import shutil
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from c2f_exp.core.errors import C2FError
from c2f_exp.core.layout import RESULT

log = logging.getLogger(__name__)
SMALL = 1 << 20  # files up to this size get a full content hash
SKIP = {RESULT, "DONE"}  # written after the fingerprint
MUTABLE = ("lm_eval_tasks/",)  # rewritten on reuse (eval's publish repoints their data paths)


class CorruptArtifact(C2FError):
    """A cached artifact no longer matches what was recorded when it was built."""


def _st_header_hash(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        raw = fh.read(min(n, 100_000_000))
    return hashlib.sha256(head + raw).hexdigest()


def _file_entry(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    entry: dict[str, Any] = {"size": size}
    if path.suffix == ".safetensors":
        entry["header_sha256"] = _st_header_hash(path)
    elif size <= SMALL:
        entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return entry


def fingerprint(art: Path) -> dict[str, dict[str, Any]]:
    """relative path -> {size, header_sha256 | sha256} for every file of an artifact dir."""
    out = {}
    for p in sorted(art.rglob("*")):
        rel = p.relative_to(art).as_posix()
        if p.is_file() and rel not in SKIP and not rel.startswith(MUTABLE):
            out[rel] = _file_entry(p)
    return out


def verify(art: Path, recorded: dict[str, dict[str, Any]] | None) -> None:
    """Raise CorruptArtifact unless every recorded file is there with its size and hashes.

    `recorded` None (an artifact from before verification existed) passes."""
    for rel, want in (recorded or {}).items():
        p = art / rel
        if not p.is_file():
            raise CorruptArtifact(f"cached artifact {art}: {rel} is missing")
        got = _file_entry(p)
        for k in ("size", "header_sha256", "sha256"):
            if k in want and got.get(k) != want[k]:
                what = f"{got['size']} bytes, built with {want['size']}" if k == "size" else k
                raise CorruptArtifact(
                    f"cached artifact {art}: {rel} differs from when it was built ({what}); "
                    "truncated or edited after the build"
                )


def verify_result(art: Path, result: Any) -> dict[str, Any]:
    """`result` (the parsed result.json) if it has the shape the pipeline wrote — an object
    with `metrics` (an object) and `files` (an object, absent only in artifacts older than
    verification) — and the files match it (`verify`); else CorruptArtifact, so an edited
    result.json (`{}`, `[]`) is rebuilt like any other damage, never reused."""
    files = result.get("files") if isinstance(result, dict) else None
    if (
        not isinstance(result, dict)
        or not isinstance(result.get("metrics"), dict)
        or not isinstance(files, (dict, type(None)))
    ):
        got = json.dumps(result)[:60]
        raise CorruptArtifact(
            f"cached artifact {art}: result.json is not the object its build wrote (got {got}); "
            "edited after the build"
        )
    verify(art, files)
    return result


# ---- garbage collection ------------------------------------------------------------------
@contextlib.contextmanager
def _lock_free(art: Path) -> Iterator[bool]:
    """Hold artifact `art`'s claim lock if nobody does; yields False when it is busy."""
    lock = art.with_name(art.name + ".lock")
    if not lock.exists():
        yield True
        return
    with open(lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _artifact_of(p: Path) -> Path:
    """The artifact a temp/work dir belongs to (.tmp-<key>-<pid>-<ns>, .old-<key>-<ns>,
    <key>.work)."""
    name = p.name
    if name.endswith(".work"):
        return p.with_name(name[: -len(".work")])
    return p.with_name(name.split("-", 2)[1] if name.count("-") >= 2 else name)


def referenced(runs: list[Path]) -> set[str]:
    """Artifact paths named by any manifest.json under `runs`."""
    refs = set()
    for root in runs:
        for m in root.rglob("manifest.json") if root.is_dir() else ():
            with contextlib.suppress(ValueError, OSError, KeyError, TypeError):
                for s in json.loads(m.read_text()).get("stages", []):
                    refs.add(str(Path(s["path"]).resolve()))
    return refs


def collect(
    cache: Path, runs: list[Path] | None = None, work: bool = False, unused: bool = False
) -> list[tuple[str, Path]]:
    """(reason, path) of everything gc would remove (see the module docstring)."""
    items: list[tuple[str, Path]] = []
    refs = referenced(runs or []) if unused else set()
    for stage_dir in sorted(p for p in cache.iterdir() if p.is_dir()) if cache.is_dir() else []:
        for p in sorted(stage_dir.iterdir()):
            if not p.is_dir():
                continue
            if p.name.startswith((".tmp-", ".old-")):
                items.append(("orphaned temp dir", p))
            elif p.name.endswith(".work"):
                done = (_artifact_of(p) / "DONE").is_file()
                if done or work:
                    items.append(("work dir of a " + ("complete" if done else "killed"), p))
            elif unused and (p / "DONE").is_file() and str(p.resolve()) not in refs:
                items.append(("artifact no manifest refers to", p))
    return items


def gc(
    cache: Path,
    runs: list[Path] | None = None,
    work: bool = False,
    unused: bool = False,
    dry_run: bool = False,
) -> list[tuple[str, Path]]:
    """Remove what `collect` finds, each under its artifact's free lock. Returns what went."""
    removed = []
    for reason, p in collect(cache, runs, work, unused):
        art = p if reason.startswith("artifact") else _artifact_of(p)
        with _lock_free(art) as free:
            if not free:
                log.info("in use, kept: %s", p)
                continue
            if not dry_run:
                shutil.rmtree(p, ignore_errors=True)
            removed.append((reason, p))
    return removed


def main(argv: list[str] | None = None) -> int:
    desc = __doc__.split("\n")[0]
    ap = argparse.ArgumentParser(prog="python -m c2f_exp.cache", description=desc)
    ap.add_argument("--gc", action="store_true", help="remove orphaned temp/work dirs")
    ap.add_argument("--cache-dir", type=Path, default=Path("outputs/cache"))
    ap.add_argument("--runs", type=Path, nargs="*", default=[Path("outputs")])
    ap.add_argument("--work", action="store_true", help="also .work dirs of killed builds")
    ap.add_argument("--unused", action="store_true", help="also artifacts no manifest names")
    ap.add_argument("--dry-run", action="store_true", help="list only")
    a = ap.parse_args(argv)
    if not a.gc:
        ap.print_help()
        return 0
    items = gc(a.cache_dir, a.runs, a.work, a.unused, a.dry_run)
    verb = "would remove" if a.dry_run else "removed"
    for reason, p in items:
        print(f"{verb} {p}  ({reason})")
    print(f"{verb} {len(items)} item(s) under {a.cache_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
