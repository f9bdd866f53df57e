"""Merge methods: pure tensor math (docs/method.md §2.2). No files, no config objects.

Every method merges one weight at a time in two steps, so the same code serves a whole tensor
(in memory) and a stream of blocks (`merge/stream.py`):

* `prepare(x, lam, p, key)` -> dict: whole-tensor quantities (magnitude thresholds, SLERP
  coefficients), computed block by block over the flat inputs;
* `block(x, lam, p, prep, key, start, buf)` -> `BlockOut`: elementwise merge of flat fp32
  blocks that start at element `start` of the tensor; with a `Scratch` in `buf`, results may
  live in its reusable buffers (valid until the next call).

`x` maps a role (`instruct`, `base`, `coarse`) to a flat tensor of N elements. Arithmetic is in
fp32 whatever the storage dtype. `key` is a per-tensor integer (from the tensor name and seed)
that keys DARE's random masks, which are drawn on a fixed grid of `BLOCK` elements so that a
block-by-block merge equals a whole-tensor merge bit for bit.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch

BLOCK = 1 << 18  # elements per block: 1 MiB of fp32 keeps the fused passes in cache
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclass(frozen=True)
class Params:
    filter: str = "none"  # knowledge_residue: none | magnitude | dare | sign_agree
    density: float = 1.0  # magnitude filter, ties trimming: fraction kept
    drop_p: float = 0.0  # dare: drop probability
    seed: int = 0


class BlockOut(NamedTuple):
    out: torch.Tensor  # (n,) fp32 merged values
    residue: torch.Tensor | None = None  # (n,) coarse - base before filtering
    kept: torch.Tensor | None = None  # (n,) the filtered residue actually added (times lambda)


class Scratch:
    """Reusable fp32/bool block buffers, so a block loop allocates nothing. Fresh 1 MiB
    allocations go back to the OS when freed and are page-faulted in again on the next block:
    on the 400M-parameter benchmark that doubled the merge's CPU time."""

    def __init__(self) -> None:
        self._bufs: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def get(self, name: str, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        b = self._bufs.get((name, dtype))
        if b is None or b.numel() < n:
            b = self._bufs[(name, dtype)] = torch.empty(max(n, BLOCK), dtype=dtype)
        return b[:n]

    def put(self, name: str, t: torch.Tensor) -> None:
        """Use `t` (fp32) as buffer `name` from now on (e.g. one the shard writer owns)."""
        self._bufs[(name, t.dtype)] = t

    def buffers(self) -> list[torch.Tensor]:
        return list(self._bufs.values())


def _buf(buf: Scratch | None, name: str, like: torch.Tensor) -> torch.Tensor | None:
    """`out=` target for an fp32 result shaped like `like` (None: let torch allocate)."""
    return None if buf is None else buf.get(name, like.numel())


class Method(Protocol):
    """What every merge method provides (see the module docstring)."""

    roles: tuple[str, ...]  # inputs it reads

    def prepare(
        self, x: dict[str, torch.Tensor], lam: float, p: Params, key: int
    ) -> dict[str, Any]: ...

    def block(
        self,
        x: dict[str, torch.Tensor],
        lam: float,
        p: Params,
        prep: dict[str, Any],
        key: int,
        start: int,
        buf: Scratch | None = None,
    ) -> BlockOut: ...


def layer_index(name: str) -> int | None:
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def interpolate(values: list[float], t: float) -> float:
    """mergekit's gradient: piecewise-linear over `values` at depth t in [0, 1]."""
    scaled = t * (len(values) - 1)
    i0 = int(scaled)
    i1 = min(len(values) - 1, i0 + 1)
    frac = scaled - i0
    return (1 - frac) * values[i0] + frac * values[i1]


def coefficient_for(
    name: str, coefficient: list[float], overrides: dict[str, list[float]], num_layers: int
) -> float:
    """Lambda for tensor `name`: the first override whose pattern is a substring of the name,
    else `coefficient`; a list is interpolated at t = layer / (num_layers - 1). Tensors outside
    the layers (embeddings, final norm, lm_head) take t = 0, as mergekit does."""
    values = next((v for pat, v in overrides.items() if pat in name), coefficient)
    i = layer_index(name)
    if i is None:
        return interpolate(values, 0.0)
    t = i / (num_layers - 1) if num_layers > 1 else 1.0
    return interpolate(values, t)


def tensor_key(name: str, seed: int, role: str = "coarse") -> int:
    """Stable 32-bit key of (seed, role, tensor name) for DARE masks."""
    return zlib.crc32(f"{seed}:{role}:{name}".encode())


def dare_keep(start: int, n: int, p: float, key: int) -> torch.Tensor:
    """Bernoulli(1 - p) keep-mask for elements [start, start + n) of a tensor: (n,) bool.

    Drawn on a fixed grid of BLOCK elements, each grid cell with its own seeded generator, so
    the mask of an element depends only on (key, its index), never on how callers block."""
    parts = []
    g = torch.Generator()
    pos, end = start, start + n
    while pos < end:
        cell, off = divmod(pos, BLOCK)
        take = min(BLOCK - off, end - pos)
        g.manual_seed(key * 1_000_003 + cell)
        parts.append(torch.rand(off + take, generator=g)[off:] >= p)
        pos += take
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def dare(delta: torch.Tensor, keep: torch.Tensor, p: float) -> torch.Tensor:
    """DARE (Yu et al. 2023): drop entries with probability p, rescale survivors by 1/(1-p)."""
    return delta * keep * (1.0 / (1.0 - p)) if p > 0 else delta


def magnitude_threshold(delta: torch.Tensor, density: float) -> float:
    """|value| of the k-th largest entry of `delta` (any shape), k = max(1, int(density * N)).
    Keeping `|delta| >= threshold` keeps the top-k by magnitude (plus exact ties)."""
    if density >= 1 or delta.numel() == 0:
        return 0.0
    flat = delta.reshape(-1).abs().float()
    k = max(1, int(density * flat.numel()))
    return float(flat.kthvalue(flat.numel() - k + 1).values)


def _blocks(x: dict[str, torch.Tensor]):
    n = next(iter(x.values())).numel()
    for s in range(0, n, BLOCK):
        yield {r: t[s : s + BLOCK].float() for r, t in x.items()}


def _delta_threshold(x: dict[str, torch.Tensor], role: str, density: float) -> float:
    if density >= 1:
        return 0.0
    return magnitude_threshold(x[role].float() - x["base"].float(), density)


class KnowledgeResidue:
    """theta_instruct + lambda * filter(theta_coarse - theta_base)  (Mistral-C2F's KRM)."""

    roles = ("instruct", "base", "coarse")

    def prepare(self, x, lam, p, key) -> dict[str, Any]:
        if p.filter == "magnitude":
            return {"thr": _delta_threshold(x, "coarse", p.density)}
        return {}

    def block(self, x, lam, p, prep, key, start, buf=None) -> BlockOut:
        residue = torch.sub(x["coarse"], x["base"], out=_buf(buf, "residue", x["base"]))
        kept = residue
        if p.filter == "magnitude":
            kept = residue * (residue.abs() >= prep["thr"])
        elif p.filter == "dare":
            kept = dare(residue, dare_keep(start, residue.numel(), p.drop_p, key), p.drop_p)
        elif p.filter == "sign_agree":  # drop entries that fight the instruct model's own delta
            kept = residue * (residue * (x["instruct"] - x["base"]) >= 0)
        if lam == 0:
            return BlockOut(x["instruct"], residue, kept)
        out = torch.add(x["instruct"], kept, alpha=lam, out=_buf(buf, "out", residue))
        return BlockOut(out, residue, kept)


class Linear:
    """(1 - t) * theta_instruct + t * theta_coarse, t = lambda (weight of coarse)."""

    roles = ("instruct", "coarse")

    def prepare(self, x, lam, p, key) -> dict[str, Any]:
        return {}

    def block(self, x, lam, p, prep, key, start, buf=None) -> BlockOut:
        if lam == 0:
            return BlockOut(x["instruct"])
        out = torch.mul(x["instruct"], 1 - lam, out=_buf(buf, "out", x["instruct"]))
        return BlockOut(out.add_(x["coarse"] * lam))


class Slerp:
    """Spherical interpolation from instruct (t=0) to coarse (t=1) over each whole tensor,
    linear when the two are nearly collinear (|cos| > 0.9995), as mergekit does."""

    roles = ("instruct", "coarse")
    dot_threshold = 0.9995

    def prepare(self, x, lam, p, key) -> dict[str, Any]:
        aa = bb = ab = 0.0
        for b in _blocks(x):  # float64 sums over fp32 blocks
            a, c = b["instruct"].double(), b["coarse"].double()
            aa, bb, ab = aa + float(a @ a), bb + float(c @ c), ab + float(a @ c)
        na = math.sqrt(aa) if aa > 1e-16 else 1.0
        nb = math.sqrt(bb) if bb > 1e-16 else 1.0
        cos = min(1.0, max(-1.0, ab / (na * nb)))
        if abs(cos) > self.dot_threshold:
            return {"ca": 1 - lam, "cb": lam}
        theta = math.acos(cos)
        s = math.sin(theta)
        return {"ca": math.sin((1 - lam) * theta) / s, "cb": math.sin(lam * theta) / s}

    def block(self, x, lam, p, prep, key, start, buf=None) -> BlockOut:
        if lam == 0:
            return BlockOut(x["instruct"])
        out = torch.mul(x["instruct"], prep["ca"], out=_buf(buf, "out", x["instruct"]))
        return BlockOut(out.add_(x["coarse"] * prep["cb"]))


class Ties:
    """TIES (Yadav et al. 2023) over base with weights {instruct: 1, coarse: lambda}: trim each
    delta to its top-`density` magnitudes, elect a sign per entry from the weighted sum, and
    average the agreeing weighted deltas (mergekit's `ties`, normalize=true)."""

    roles = ("instruct", "base", "coarse")

    def prepare(self, x, lam, p, key) -> dict[str, Any]:
        return {r: _delta_threshold(x, r, p.density) for r in ("instruct", "coarse")}

    def block(self, x, lam, p, prep, key, start, buf=None) -> BlockOut:
        base = x["base"]
        di = x["instruct"] - base
        residue = x["coarse"] - base
        di = di * (di.abs() >= prep["instruct"])
        dc = residue * (residue.abs() >= prep["coarse"]) * lam
        elected = torch.where(di + dc >= 0, 1.0, -1.0)
        mi, mc = di.sign() == elected, dc.sign() == elected
        mixed = di * mi + dc * mc
        divisor = mi.float() + mc * lam
        divisor = torch.where(divisor == 0, 1.0, divisor)
        return BlockOut(base + mixed / divisor, residue)


class Dare:
    """DARE-linear: base + DARE(instruct - base) + lambda * DARE(coarse - base), drop p, rescale
    1/(1-p) (Yu et al. 2023; mergekit's dare_linear rescales by the L1 norm instead)."""

    roles = ("instruct", "base", "coarse")

    def prepare(self, x, lam, p, key) -> dict[str, Any]:
        return {}

    def block(self, x, lam, p, prep, key, start, buf=None) -> BlockOut:
        base, n = x["base"], x["base"].numel()
        residue = x["coarse"] - base
        di = dare(x["instruct"] - base, dare_keep(start, n, p.drop_p, key ^ 0x5A5A5A5A), p.drop_p)
        dc = dare(residue, dare_keep(start, n, p.drop_p, key), p.drop_p)
        return BlockOut(torch.add(base + di, dc, alpha=lam), residue)


METHODS: dict[str, Method] = {
    "knowledge_residue": KnowledgeResidue(),
    "linear": Linear(),
    "slerp": Slerp(),
    "ties": Ties(),
    "dare": Dare(),
}


def merge_tensor(
    method: str, x: dict[str, torch.Tensor], lam: float, p: Params = Params(), key: int = 0
) -> torch.Tensor:
    """In-memory merge of one weight: `x` role -> tensor (same shape); returns fp32, that shape.

    Example: `merge_tensor("knowledge_residue", {"instruct": i, "base": b, "coarse": c}, 0.5)`
    equals `i + 0.5 * (c - b)`."""
    m = METHODS[method]
    shape = x[m.roles[0]].shape
    flat = {r: x[r].reshape(-1) for r in m.roles}
    prep = m.prepare(flat, lam, p, key)
    out = m.block({r: t.float() for r, t in flat.items()}, lam, p, prep, key, 0).out
    return out.reshape(shape)
