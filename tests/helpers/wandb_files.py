"""Read a job's offline wandb run file (no network, no wandb public API): run record, history,
summary. Shared by the sweep and tracker tests."""

from __future__ import annotations

import json
import struct
from pathlib import Path


def wandb_records(job_dir: Path) -> list:
    """The protobuf `Record`s of a job's offline wandb run file.

    The .wandb file is a LevelDB-style log (7-byte file header, 32 KiB blocks of chunks with
    a 7-byte crc/length/type header) of protobuf `Record`s: read with wandb's own protobufs.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    (f,) = job_dir.glob("wandb/offline-run-*/*.wandb")
    data, pos, buf, block, out = f.read_bytes(), 7, b"", 32768, []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
    return out


def wandb_run_record(job_dir: Path):
    """The `run` record (group, name, job_type, config) of a job's offline wandb run."""
    return next(r.run for r in wandb_records(job_dir) if r.WhichOneof("record_type") == "run")


def wandb_history(job_dir: Path, key: str) -> list:
    """The values a job logged under `key`, in order (history rows that hold it)."""
    rows = [r.history for r in wandb_records(job_dir) if r.WhichOneof("record_type") == "history"]
    items = [i for h in rows for i in h.item]
    return [json.loads(i.value_json) for i in items if (i.key or "/".join(i.nested_key)) == key]


def wandb_keys(job_dir: Path, kind: str) -> set[str]:
    """Keys a job logged as `history` rows or `summary` updates."""
    recs = [
        getattr(r, kind) for r in wandb_records(job_dir) if r.WhichOneof("record_type") == kind
    ]
    items = [i for rec in recs for i in (rec.item if kind == "history" else rec.update)]
    return {i.key or "/".join(i.nested_key) for i in items}
