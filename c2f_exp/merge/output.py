"""The merged model directory: companion files, recipe, model card, copy to `merger.output`."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from c2f_exp.merge.config import coefficient_values
from c2f_exp.merge.io import INDEX, MergeError

# Not copied from the instruct directory: weights, and files describing another artifact.
_NOT_COPIED = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt", ".gguf")
_OWN_FILES = {
    INDEX,
    "pytorch_model.bin.index.json",
    "README.md",
    "merge_recipe.json",
    "DONE",
    "result.json",
    "metrics.jsonl",
}


def copy_aux_files(src: Path, out: Path, out_dtype: str | None) -> list[str]:
    """Copy config, generation config, tokenizer etc. from `src`; set config dtype if given."""
    copied = []
    for f in sorted(src.iterdir()):
        if not f.is_file() or f.name in _OWN_FILES or f.name.endswith(_NOT_COPIED):
            continue
        shutil.copy2(f, out / f.name)
        copied.append(f.name)
    if out_dtype:
        cfg = json.loads((out / "config.json").read_text())
        for k in ("dtype", "torch_dtype"):
            if k in cfg or k == "dtype":
                cfg[k] = out_dtype
        (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return copied


def check_output_dir(dest: str, overwrite: bool) -> Path:
    """`merger.output` must not exist unless overwrite=true, and its parent must be creatable."""
    p = Path(dest).expanduser()
    if p.exists() and not overwrite:
        raise MergeError(
            f"merger.output={dest} already exists; choose another directory or set "
            "merger.overwrite=true to replace it"
        )
    if p.exists() and not p.is_dir():
        raise MergeError(f"merger.output={dest} exists and is not a directory")
    return p


@contextmanager
def atomic_output(dest: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temp dir beside `dest`; on success rename it to `dest` (replacing it only when
    `overwrite`). On error the temp dir is removed: no complete-looking output is left."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".tmp-{dest.name}-{os.getpid()}-{time.time_ns()}")
    tmp.mkdir()
    try:
        yield tmp
        check_output_dir(str(dest), overwrite)
        if dest.exists():
            old = dest.with_name(f".old-{dest.name}-{time.time_ns()}")
            dest.rename(old)
            tmp.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def copy_model_dir(src: Path, dest: str, overwrite: bool) -> Path:
    """Copy the model files of `src` to `dest` atomically (temp dir + rename)."""
    target = check_output_dir(dest, overwrite)
    with atomic_output(target, overwrite) as tmp:
        for f in src.iterdir():
            if f.is_file() and f.name not in ("DONE", "result.json", "metrics.jsonl"):
                shutil.copy2(f, tmp / f.name)
    return target


def recipe(m: Any, models, stats, n_layers: int, shards: int, nbytes: int) -> dict[str, Any]:
    """`merge_recipe.json` (docs/method.md §5): method, coefficients, inputs with fingerprints,
    residue statistics (totals and per tensor). `models`: role -> io.ModelDir."""
    merged = [s for s in stats.values() if "numel" in s]
    kept = sum(s["kept"] for s in merged)
    changed = sum(s["changed"] for s in merged)
    numel = sum(s["numel"] for s in merged)
    residue = {
        "l2": math.sqrt(sum(s["residue_l2"] ** 2 for s in merged)),
        "entries": numel,
        "kept_entries": kept,
        "changed_entries": changed,
        "changed_fraction": changed / numel if numel else 0.0,
        # fraction of added residue entries still visible after the cast to the output dtype
        "survival": changed / kept if kept else None,
    }
    return {
        "method": m.method,
        "coefficient": coefficient_values(m.coefficient),
        "module_overrides": {
            k: coefficient_values(v) for k, v in (m.module_overrides or {}).items()
        },
        "filter": m.filter,
        "density": m.density,
        "drop_p": m.drop_p,
        "seed": m.seed,
        "on_mismatch": m.on_mismatch,
        "out_dtype": m.out_dtype,
        "num_layers": n_layers,
        "inputs": {
            r: {
                "path": str(md.path),
                "fingerprint": md.fingerprint(),
                "fingerprint_kind": "sha256(shard names, sizes, headers, first/last 64 KiB)",
            }
            for r, md in models.items()
        },
        "shards": shards,
        "total_size": nbytes,
        "residue": residue,
        "tensors": stats,
    }


CARD_PARAMS = (
    "method",
    "coefficient",
    "module_overrides",
    "filter",
    "density",
    "drop_p",
    "seed",
    "on_mismatch",
    "out_dtype",
)


def write_card(out: Path, recipe: dict[str, Any], parents: dict[str, str]) -> Path:
    """README.md with Hub front matter (c2f_exp/core/model_card.py): `base_model` lists the inputs
    that are Hub ids (as mergekit's card does), the recipe sits in the front matter and text.

    Args:
        out: the merged model directory (the card is written inside it, before its rename).
        recipe: `recipe(...)`'s dict.
        parents: role -> the input as the user named it (Hub id or directory).
    """
    from c2f_exp.core.model_card import write_model_card

    res = recipe["residue"]
    surv = "n/a" if res["survival"] is None else f"{100 * res['survival']:.2f}%"
    prints = "\n".join(
        f"- {r}: fingerprint `{v['fingerprint'][:16]}`" for r, v in recipe["inputs"].items()
    )
    text = (
        f"Made by c2f_exp's merge stage with method `{recipe['method']}` (docs/method.md §2.2): "
        "instruct + lambda * filter(coarse - base).\n\n"
        f"## Input fingerprints\n{prints}\n\n"
        f"## Residue\n- L2 norm: {res['l2']:.6g}\n- survival after output cast: {surv}\n"
        f"- output entries changed vs instruct: {100 * res['changed_fraction']:.2f}%\n\n"
        "Full statistics per tensor: `merge_recipe.json`."
    )
    return write_model_card(
        out,
        role="fine",
        description=text,
        parents=parents,
        tags=["merge", recipe["method"]],
        recipe={k: recipe[k] for k in CARD_PARAMS},
    )
