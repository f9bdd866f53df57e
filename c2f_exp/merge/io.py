"""Streaming safetensors I/O: lazy (memory-mapped) reads and header-first shard writes.

Reads go through `safetensors.safe_open`, whose tensors are memory-mapped: they cost page cache,
not private memory. Writes use the safetensors layout directly (8-byte header length, JSON
header, raw little-endian data): every output tensor's dtype and shape is known before merging,
so a shard's header is written first and each tensor's bytes are appended block by block as
they are merged. Nothing larger than a block is held in memory for the output.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import queue
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from c2f_exp.core.errors import C2FError, ConfigError
from c2f_exp.core.hub import read_config_json

log = logging.getLogger(__name__)

ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
ST_NAMES = {v: k for k, v in ST_DTYPES.items()}
INDEX = "model.safetensors.index.json"


class MergeError(C2FError):
    """A model directory cannot be merged (missing, malformed, mismatched, NaN, ...)."""


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def read_header(path: Path, key: str) -> tuple[dict[str, Any], bytes]:
    """Parse a safetensors header -> (header dict, raw header bytes). Raises MergeError."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < n <= min(size - 8, 100_000_000):
            raise MergeError(
                f"{key}: {path} is not a safetensors file (bad header length); "
                "re-save the model with save_pretrained(safe_serialization=True)"
            )
        raw = fh.read(n)
    try:
        return json.loads(raw), raw
    except ValueError:
        raise MergeError(
            f"{key}: {path} has a corrupt safetensors header; re-save the model"
        ) from None


class ModelDir:
    """Lazy view of a Hugging Face model directory's safetensors weights.

    `key` is the config key the directory came from, named in every error."""

    def __init__(self, path: str | Path, key: str):
        self.path, self.key = Path(path).expanduser(), key
        if not self.path.is_dir():
            raise MergeError(
                f"{key}={path} is not a directory; point it at a Hugging Face "
                "model directory (config.json + *.safetensors)"
            )
        if not (self.path / "config.json").is_file():
            raise MergeError(
                f"{key}={path} has no config.json; point it at a Hugging Face model directory"
            )
        self.config = read_config_json(self.path, key, MergeError)
        self.files = self._weight_files()
        self.tensors: dict[str, TensorInfo] = {}
        self.headers: dict[str, bytes] = {}
        for f in self.files:
            header, raw = read_header(f, key)
            self.headers[f.name] = raw
            for name, meta in header.items():
                if name == "__metadata__":
                    continue
                if meta.get("dtype") not in ST_DTYPES:
                    raise MergeError(
                        f"{key}: tensor {name} in {f} has unsupported dtype {meta.get('dtype')!r}"
                    )
                b, e = meta["data_offsets"]
                self.tensors[name] = TensorInfo(
                    f, ST_DTYPES[meta["dtype"]], tuple(meta["shape"]), e - b
                )
        self._handles: dict[Path, Any] = {}

    def _weight_files(self) -> list[Path]:
        from c2f_exp.core.hub import (
            weight_files,  # index first; pickle-only and empty dirs refused
        )

        try:
            return weight_files(self.path, self.key)
        except ConfigError as e:
            raise MergeError(str(e)) from None

    @property
    def num_layers(self) -> int:
        cfg = self.config.get("text_config", self.config)
        n = cfg.get("num_hidden_layers", cfg.get("n_layer"))
        if not isinstance(n, int) or n < 1:
            raise MergeError(f"{self.key}: {self.path}/config.json has no num_hidden_layers")
        return n

    def flat(self, name: str) -> torch.Tensor:
        """Tensor `name` as a flat (N,) memory-mapped tensor in its stored dtype."""
        info = self.tensors[name]
        if info.file not in self._handles:
            from safetensors import safe_open

            self._handles[info.file] = safe_open(str(info.file), framework="pt")
        return self._handles[info.file].get_tensor(name).reshape(-1)

    def close(self) -> None:
        self._handles.clear()

    def fingerprint(self) -> str:
        """sha256 of each shard's name, size, header and first/last 64 KiB: cheap, content-based
        enough to tell checkpoints apart without reading gigabytes."""
        h = hashlib.sha256()
        for f in self.files:
            size = f.stat().st_size
            h.update(f"{f.name}:{size}:".encode() + self.headers[f.name])
            with open(f, "rb") as fh:
                h.update(fh.read(65536))
                fh.seek(max(0, size - 65536))
                h.update(fh.read(65536))
        return h.hexdigest()


def local_model_dir(ref: str, key: str) -> str:
    """A local directory for `ref` (a path, or a hub id already in the local HF cache)."""
    if Path(ref).expanduser().is_dir():
        return str(Path(ref).expanduser().resolve())
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(
            ref,
            local_files_only=True,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"],
        )
    except Exception:
        raise MergeError(
            f"{key}={ref} is neither a local directory nor in the local Hugging "
            f"Face cache; download it first or set {key}=/path/to/model"
        ) from None


class ShardWriter:
    """Write one safetensors file whose tensors (name, dtype, shape) are known up front.

    The header goes first; `write(t)` then appends tensor data in the declared order; `close`
    checks that exactly the declared number of bytes arrived. The file's full size is reserved
    up front (fallocate, where the filesystem has it: ext4 then allocates once, not per block),
    and with `background` a writer thread does the write syscalls, so merging the next block
    overlaps writing this one (`write` hands it a copy, or the tensor itself if `owned`)."""

    QUEUE = 4  # blocks in flight: private memory stays a few blocks

    def __init__(
        self,
        path: Path,
        entries: list[tuple[str, torch.dtype, tuple[int, ...]]],
        background: bool = True,
    ):
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, dtype, shape in entries:
            n = math.prod(shape) * dtype.itemsize
            header[name] = {
                "dtype": ST_NAMES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + n],
            }
            offset += n
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned
        self.path, self.expected, self.written = path, offset, 0
        self._fh = open(path, "wb", buffering=0)  # noqa: SIM115 (closed in close())
        _reserve(self._fh.fileno(), 8 + len(blob) + offset)
        self._fh.write(struct.pack("<Q", len(blob)) + blob)
        self._err: BaseException | None = None
        self._q: queue.Queue | None = None
        self._free: queue.Queue = queue.Queue()  # copy buffers back from the writer thread
        if background:
            self._q = queue.Queue(maxsize=self.QUEUE)
            self._thread = threading.Thread(target=self._drain, name="shard-writer", daemon=True)
            self._thread.start()

    def buffer(self, nbytes: int) -> np.ndarray:
        """A uint8 buffer of >= `nbytes` from the pool, to fill and `write(..., pooled=it)`."""
        buf = None if self._free.empty() else self._free.get_nowait()  # only we consume
        return (
            buf
            if buf is not None and buf.nbytes >= nbytes
            else np.empty(max(nbytes, 1 << 20), np.uint8)
        )

    def release(self, buf: np.ndarray | None) -> None:
        """Give back a `buffer` that was not written."""
        if buf is not None:
            self._free.put(buf)

    def write(
        self, t: torch.Tensor, owned: bool = False, pooled: np.ndarray | None = None
    ) -> None:
        """Append the bytes of `t` (any shape, contiguous after reshape). `owned`: the caller
        will not modify `t` again, so the writer thread may read it later without a copy;
        `pooled`: `t` lives in this `buffer`, which goes back to the pool once written."""
        data = t.reshape(-1).contiguous().view(torch.uint8).numpy()
        self.written += data.nbytes
        if self._q is None:
            self._fh.write(data)
            self.release(pooled)
            return
        if self._err is not None:
            self._stop()
            raise self._err
        if pooled is None and not owned:  # a copy in a pooled buffer: no fresh pages per block
            pooled = self.buffer(data.nbytes)
            np.copyto(pooled[: data.nbytes], data)
            data = pooled[: data.nbytes]
        self._q.put((data, pooled))  # blocks while QUEUE blocks are in flight

    def _drain(self) -> None:
        while (item := self._q.get()) is not None:
            data, buf = item
            if self._err is None:
                try:
                    self._fh.write(data)
                except BaseException as e:  # re-raised in the merging thread
                    self._err = e
            self.release(buf)

    def _stop(self) -> None:
        if self._q is not None:
            self._q.put(None)
            self._thread.join()
            self._q = None

    def abort(self) -> None:
        """Stop writing (after an error elsewhere): no checks, the file is left as it is."""
        self._stop()
        self._fh.close()

    def close(self) -> None:
        self._stop()
        self._fh.close()
        if self._err is not None:
            raise self._err
        if self.written != self.expected:
            raise MergeError(
                f"internal: {self.path} got {self.written} bytes, expected {self.expected}"
            )


def _reserve(fd: int, size: int) -> None:
    """fallocate(2) `size` bytes, best effort: unlike posix_fallocate, never emulated by
    writing zeros (which would double the writes where a filesystem lacks fallocate)."""
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):  # not Linux/glibc: skip
        return
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    fn(fd, 0, 0, size)  # mode 0; a failure (EOPNOTSUPP, ENOSPC: the write will say) is ignored


def plan_shards(
    entries: list[tuple[str, torch.dtype, tuple[int, ...]]], shard_size: int
) -> list[list[tuple[str, torch.dtype, tuple[int, ...]]]]:
    """Greedy grouping in order; a tensor larger than `shard_size` gets a shard of its own."""
    shards: list[list] = [[]]
    size = 0
    for e in entries:
        n = math.prod(e[2]) * e[1].itemsize
        if shards[-1] and size + n > shard_size:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += n
    return shards if shards[0] else []


def shard_names(n: int) -> list[str]:
    if n == 1:
        return ["model.safetensors"]
    return [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]


def write_index(out: Path, shards: list[list], names: list[str]) -> None:
    """`model.safetensors.index.json` (transformers' sharded-checkpoint index)."""
    total = sum(math.prod(s) * d.itemsize for shard in shards for _, d, s in shard)
    wmap = {
        name: fname for shard, fname in zip(shards, names, strict=True) for name, _, _ in shard
    }
    (out / INDEX).write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": wmap}, indent=2)
    )


def rss_anon_kb() -> int:
    """Private (anonymous) resident memory of this process, from /proc/self/status."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1
