"""The merged model directory: companion files, recipe, model card, copy to `merger.output`."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from c2f_exp.core.layout import RESULT
from c2f_exp.merge.config import coefficient_values
from c2f_exp.merge.io import INDEX, MergeError

if TYPE_CHECKING:
    from c2f_exp.merge.config import MergerConf

# Not copied from the instruct directory: weights, and files describing another artifact.
_NOT_COPIED = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt", ".gguf")
_OWN_FILES = {
    INDEX,
    "pytorch_model.bin.index.json",
    "README.md",
    "merge_recipe.json",
    "DONE",
    RESULT,
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


def check_output_dir(
    dest: str, overwrite: bool, protected: Mapping[str, Any] | None = None
) -> Path:
    """`merger.output` must not exist unless overwrite=true, and its parent must be creatable.

    One rule guards every replacement (docs/method.md §5): the output may not equal, contain
    or sit inside any `protected` directory (what -> path: the cache dir, the run dir, the
    merge inputs), nor sit inside a run dir (`.hydra/` or manifest.json) or a cache artifact
    (DONE); and overwrite=true replaces only an empty directory or a previous merge output
    (merge_recipe.json), never e.g. a cache or a run dir it was pointed at by mistake."""
    p = Path(dest).expanduser()
    _check_not_protected(dest, p.resolve(), protected or {})
    if p.exists() and not overwrite:
        raise MergeError(
            f"merger.output={dest} already exists; choose another directory or set "
            "merger.overwrite=true to replace it"
        )
    if p.exists() and not p.is_dir():
        raise MergeError(f"merger.output={dest} exists and is not a directory")
    if p.is_dir() and any(p.iterdir()) and not (p / "merge_recipe.json").is_file():
        raise MergeError(
            f"merger.output={dest} exists and is not a previous merge output (no "
            "merge_recipe.json); merger.overwrite=true replaces only a merged model directory: "
            "choose another directory, or empty this one yourself"
        )
    return p


def _check_not_protected(dest: str, out: Path, protected: Mapping[str, Any]) -> None:
    fix = "choose a directory outside the cache, the run dirs and the merge inputs"
    for what, d in protected.items():
        if not d:
            continue
        q = Path(str(d)).expanduser().resolve()
        if out == q or out in q.parents or q in out.parents:
            how = "is" if out == q else "contains" if out in q.parents else "sits inside"
            raise MergeError(f"merger.output={dest} {how} {what}={d}; {fix}")
    for d in (out, *out.parents):
        if (d / "DONE").is_file() and (d / RESULT).is_file():
            raise MergeError(f"merger.output={dest} is inside the cached artifact {d}; {fix}")
        if d != out and ((d / ".hydra").is_dir() or (d / "manifest.json").is_file()):
            raise MergeError(f"merger.output={dest} sits inside the run dir {d}; {fix}")


def protected_dirs(cfg: Any, inputs: Mapping[str, Any], run_dir: Path | None = None) -> dict:
    """What `merger.output` may not touch: `paths.cache_dir`, this run's dir (Hydra's output
    dir when `run_dir` is None) and the merge inputs (role -> directory)."""
    if run_dir is None:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            run_dir = Path(HydraConfig.get().runtime.output_dir)
    out: dict[str, Any] = {"paths.cache_dir": cfg.paths.cache_dir}
    out["the run dir"] = run_dir
    out.update({f"merger.{r}": d for r, d in inputs.items()})
    return out


@contextmanager
def atomic_output(
    dest: Path, overwrite: bool, protected: Mapping[str, Any] | None = None
) -> Iterator[Path]:
    """Yield a temp dir beside `dest`; on success rename it to `dest` (replacing it only when
    `overwrite`, and only where `check_output_dir` allows). On error the temp dir is removed:
    no complete-looking output is left."""
    check_output_dir(str(dest), overwrite, protected)  # before anything is created beside it
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".tmp-{dest.name}-{os.getpid()}-{time.time_ns()}")
    tmp.mkdir()
    try:
        yield tmp
        check_output_dir(str(dest), overwrite, protected)
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


def copy_model_dir(
    src: Path, dest: str, overwrite: bool, protected: Mapping[str, Any] | None = None
) -> Path:
    """Copy the model files of `src` to `dest` atomically (temp dir + rename)."""
    target = check_output_dir(dest, overwrite, protected)
    with atomic_output(target, overwrite, protected) as tmp:
        for f in src.iterdir():
            if f.is_file() and f.name not in ("DONE", RESULT, "metrics.jsonl"):
                shutil.copy2(f, tmp / f.name)
    return target


def recipe(
    m: MergerConf, models, stats, n_layers: int, shards: int, nbytes: int
) -> dict[str, Any]:
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
