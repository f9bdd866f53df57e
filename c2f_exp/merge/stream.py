"""Streaming merge of three model dirs into a sharded safetensors model (docs/method.md §2.2).

`check_inputs` reads only headers and configs (cheap; used by the stage's preflight).
`merge_models` plans the output (names, dtypes, shapes, shards), then for each tensor runs the
method's `prepare` on the memory-mapped inputs and its `block` on fp32 blocks of `BLOCK`
elements, casting and appending each block to the shard file as it goes. Private memory is a
few blocks (plus one fp32 copy of a tensor for whole-tensor statistics such as magnitude
thresholds), never a shard per input. Residue statistics are gathered on the same blocks.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from c2f_exp.merge import io, methods, output
from c2f_exp.merge.config import ROLES, check_coefficient_length, coefficient_values, parse_size

if TYPE_CHECKING:
    from c2f_exp.merge.config import MergerConf

log = logging.getLogger(__name__)


@dataclass
class Item:
    name: str
    action: str  # merge | keep_instruct
    dtype: torch.dtype  # output dtype
    shape: tuple[int, ...]


@dataclass
class Stats:
    """Per-tensor counters; `kept` = residue entries added, `changed` = output entries that
    differ from instruct after the cast to the output dtype."""

    numel: int = 0
    residue_sq: float = 0.0
    kept: int = 0
    changed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def open_models(dirs: dict[str, str], method: str) -> dict[str, io.ModelDir]:
    return {r: io.ModelDir(dirs[r], f"merger.{r}") for r in ROLES[method]}


def check_inputs(models: dict[str, io.ModelDir], m: MergerConf) -> list[Item]:
    """Architecture, tensor names/shapes (policy `m.on_mismatch`) and lambda-list length.
    Returns the output plan. Raises MergeError / ConfigError naming the key and the fix."""
    ins = models["instruct"]
    arch = _arch(ins)
    for role, md in models.items():
        if _arch(md) != arch:
            raise io.MergeError(
                f"merger.{role}: architecture {_arch(md)} differs from the "
                f"instruct model's {arch}; merge models of one architecture"
            )
    check_coefficient_length(m.coefficient, ins.num_layers)
    for pattern, v in (m.module_overrides or {}).items():
        check_coefficient_length(v, ins.num_layers, f"merger.module_overrides.{pattern}")
        _check_pattern_matches(str(pattern), list(ins.tensors))
    out_dtype = getattr(torch, m.out_dtype) if m.out_dtype else None
    plan, problems = [], []
    for name, info in ins.tensors.items():
        bad = [
            f"{r} lacks it"
            if name not in md.tensors
            else f"{r} has shape {list(md.tensors[name].shape)} vs instruct {list(info.shape)}"
            for r, md in models.items()
            if name not in md.tensors or md.tensors[name].shape != info.shape
        ]
        floating = info.dtype.is_floating_point
        if bad:
            problems.append(f"{name} ({'; '.join(bad)})")
            if m.on_mismatch == "skip":
                continue
        action = "merge" if floating and not bad else "keep_instruct"
        plan.append(
            Item(name, action, out_dtype if out_dtype and floating else info.dtype, info.shape)
        )
    extra = sorted({n for md in models.values() for n in md.tensors} - set(ins.tensors))
    problems += [f"{n} (absent from instruct)" for n in extra]
    if problems and m.on_mismatch == "error":
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise io.MergeError(
            f"tensors differ between models: {'; '.join(problems[:3])}{more}; "
            "set merger.on_mismatch=keep_instruct or skip to merge anyway"
        )
    if problems:
        log.warning(
            "on_mismatch=%s applied to %d tensor(s): %s",
            m.on_mismatch,
            len(problems),
            "; ".join(problems[:5]),
        )
    return plan


def _check_pattern_matches(pattern: str, names: list[str]) -> None:
    """A `merger.module_overrides` key is a substring of tensor names; one matching none (a
    typo: `atention`) would change nothing and exit 0, so it is an error, with a did-you-mean."""
    if any(pattern in n for n in names):
        return
    parts = {x for n in names for c in n.split(".") for x in (c, *c.split("_")) if x}
    close = difflib.get_close_matches(pattern, sorted(parts), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]}?" if close else "use a part of a tensor name"
    raise io.MergeError(
        f"merger.module_overrides.{pattern} matches no tensor of the instruct model (keys are "
        f"substrings of tensor names such as {names[len(names) // 2]}); {hint}"
    )


def _arch(md: io.ModelDir) -> str:
    archs = "+".join(md.config.get("architectures") or ["?"])
    return f"{archs} ({md.config.get('model_type')}, {md.num_layers} layers)"


def _nonfinite_error(models, x, name: str) -> io.MergeError:
    for role, t in x.items():
        if not torch.isfinite(t).all():
            return io.MergeError(
                f"merger.{role}: tensor {name} in {models[role].path} has "
                "NaN/inf values; use a checkpoint from before the divergence"
            )
    return io.MergeError(f"merged tensor {name} overflowed to inf; lower merger.coefficient")


def _count_ne(a: torch.Tensor, b: torch.Tensor | None, buf: methods.Scratch) -> int:
    """Entries where a != b (b None: a != 0), compared as fp32 values. numpy's compare+count
    is ~4x faster than torch's on CPU here, and this runs on every block."""
    if a.dtype != torch.float32:
        a, b = a.float(), (None if b is None else b.float())
    mask = buf.get("mask", a.numel(), torch.bool).numpy()
    np.not_equal(a.numpy(), 0 if b is None else b.numpy(), out=mask)
    return int(np.count_nonzero(mask))


def _fp32(t: torch.Tensor, role: str, buf: methods.Scratch) -> torch.Tensor:
    """fp32 view of a block (no copy for fp32 storage), else a copy into a reused buffer."""
    return t if t.dtype == torch.float32 else buf.get("in_" + role, t.numel()).copy_(t)


def _merge_tensor(
    writer: io.ShardWriter,
    models,
    item: Item,
    method,
    lam: float,
    p: methods.Params,
    key: int,
    buf: methods.Scratch,
) -> Stats:
    """Merge one tensor block by block into `writer`; returns its statistics."""
    flat = {r: models[r].flat(item.name) for r in method.roles}
    prep = method.prepare(flat, lam, p, key)
    st = Stats(numel=flat["instruct"].numel())
    for s in range(0, st.numel, methods.BLOCK):
        x = {r: _fp32(t[s : s + methods.BLOCK], r, buf) for r, t in flat.items()}
        n, pooled = x["instruct"].numel(), None
        if item.dtype == torch.float32:  # the method's "out" goes straight to the writer
            pooled = writer.buffer(4 * n)
            buf.put("out", torch.from_numpy(pooled[: 4 * n]).view(torch.float32))
        res = method.block(x, lam, p, prep, key, s, buf)
        fresh = item.dtype != torch.float32 or res.out is x["instruct"]  # not a reused buffer
        o = res.out if item.dtype == torch.float32 else res.out.to(item.dtype)
        ins = flat["instruct"][s : s + methods.BLOCK]
        ins = ins if ins.dtype == item.dtype else ins.to(item.dtype)
        st.changed += _count_ne(o, ins, buf)
        total = float(res.out.sum())
        if res.residue is not None:
            sq = float(torch.dot(res.residue, res.residue))
            st.residue_sq += sq
            total += sq
        if res.kept is not None and lam != 0:
            st.kept += _count_ne(res.kept, None, buf)
        if not math.isfinite(total) and not (
            all(bool(torch.isfinite(t).all()) for t in x.values())
            and bool(torch.isfinite(res.out).all())
        ):
            raise _nonfinite_error(models, x, item.name)
        if pooled is not None and o.data_ptr() == pooled.ctypes.data:
            writer.write(o, pooled=pooled)  # no copy: the writer recycles the buffer
        else:
            writer.write(o, owned=fresh and not _aliases(o, buf))
            writer.release(pooled)
    st.extra.update({k: v for k, v in prep.items() if isinstance(v, float)})
    return st


def _copy_tensor(writer: io.ShardWriter, models, item: Item) -> Stats:
    """Copy an instruct tensor unmerged; NaN/inf are refused here too, as when merged."""
    t = models["instruct"].flat(item.name)
    for s in range(0, t.numel(), methods.BLOCK):  # memory-mapped or freshly cast: owned
        raw = t[s : s + methods.BLOCK]
        block = raw.to(item.dtype)
        if block.is_floating_point() and not bool(torch.isfinite(block).all()):
            raise _nonfinite_error(models, {"instruct": raw}, item.name)
        writer.write(block, owned=True)
    return Stats(numel=t.numel())


def _aliases(t: torch.Tensor, buf: methods.Scratch) -> bool:
    """True if `t` lives in one of the scratch buffers (reused by the next block)."""
    return any(t.data_ptr() == b.data_ptr() for b in buf.buffers())


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch ops on one thread. The block ops are memory-bound and cache-sized, where
    OpenMP's per-op barrier only costs: on a loaded 2-core VM, 2 threads were ~50x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def merge_models(dirs: dict[str, str], m: MergerConf, out: Path) -> dict[str, Any]:
    """Merge the models in `dirs` (role -> directory) per merger config `m` into `out`.

    Writes shards, the index (when sharded) and the instruct model's config/tokenizer files,
    the index and config last so that an interrupted merge never looks complete. Returns the
    recipe (docs/method.md §5) with residue statistics; the caller writes it."""
    t0 = time.time()
    models = open_models(dirs, m.method)
    plan = check_inputs(models, m)
    entries = [(it.name, it.dtype, it.shape) for it in plan]
    shards = io.plan_shards(entries, parse_size(m.shard_size))
    names = io.shard_names(len(shards))
    with _single_thread():
        stats, peak = _write_shards(models, plan, shards, names, m, out)
    if len(shards) > 1:
        io.write_index(out, shards, names)
    copied = output.copy_aux_files(models["instruct"].path, out, m.out_dtype)
    seconds = time.time() - t0
    nbytes = sum(math.prod(s) * d.itemsize for _, d, s in entries)
    log.info(
        "merged %d tensors (%.2f GB) in %.1f s (%.2f GB/s written)",
        len(entries),
        nbytes / 1e9,
        seconds,
        nbytes / 1e9 / max(seconds, 1e-9),
    )
    n_layers = models["instruct"].num_layers
    recipe = output.recipe(m, models, stats, n_layers, shards=len(names), nbytes=nbytes)
    recipe.update({"copied_files": copied, "seconds": round(seconds, 3), "rss_anon_max_kb": peak})
    for md in models.values():
        md.close()
    return recipe


def _write_shards(models, plan: list[Item], shards, names, m: MergerConf, out: Path):
    """Merge tensor by tensor into the planned shards. Returns (per-tensor stats, the largest
    RssAnon seen after a tensor, in kB)."""
    method = methods.METHODS[m.method]
    n_layers = models["instruct"].num_layers
    coef = coefficient_values(m.coefficient)
    overrides = {k: coefficient_values(v) for k, v in (m.module_overrides or {}).items()}
    p = methods.Params(m.filter, float(m.density), float(m.drop_p), int(m.seed))
    by_name = {it.name: it for it in plan}
    stats: dict[str, dict[str, Any]] = {}
    buf = methods.Scratch()
    peak = io.rss_anon_kb()
    bar = tqdm(total=len(plan), desc=f"merge ({m.method})", unit="tensor", disable=None)
    for shard, fname in zip(shards, names, strict=True):
        writer = io.ShardWriter(out / fname, shard)  # a writer thread: writes overlap merging
        try:
            for name, _, _ in shard:
                item = by_name[name]
                if item.action == "merge":
                    lam = methods.coefficient_for(name, coef, overrides, n_layers)
                    key = methods.tensor_key(name, p.seed)
                    st = _merge_tensor(writer, models, item, method, lam, p, key, buf)
                    stats[name] = _tensor_summary(st, lam)
                else:
                    _copy_tensor(writer, models, item)
                    stats[name] = {"action": item.action}
                peak = max(peak, io.rss_anon_kb())
                bar.update()
        except BaseException:
            writer.abort()
            raise
        writer.close()
    bar.close()
    return stats, peak


def _tensor_summary(st: Stats, lam: float) -> dict[str, Any]:
    d: dict[str, Any] = {
        "lambda": lam,
        "numel": st.numel,
        "changed": st.changed,
        "residue_l2": math.sqrt(st.residue_sq),
        "kept": st.kept,
        "survival": st.changed / st.kept if st.kept else None,
    }
    return {**d, **st.extra}
