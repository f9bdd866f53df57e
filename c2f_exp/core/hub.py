"""Resolve models and data sets before anything large loads; fail fast when offline.

A hub id that is neither a local directory nor in the local Hugging Face cache is checked with
one metadata request (short timeout). Offline, that fails in about a second, and the user gets
one line naming the id, the config key and the fix, instead of a failure minutes later.
"""

from __future__ import annotations

import os
from pathlib import Path

from c2f_exp.core.errors import ConfigError

TIMEOUT_S = 10.0
_FIX_MODEL = "set {key}=/path/to/local/model, or run the tiny world: python -m c2f_exp"


def _looks_local(ref: str) -> bool:
    return ref.startswith(("/", ".", "~")) or os.sep + os.sep in ref or ref.count("/") > 1


def resolve_model(ref: str, key: str, revision: str | None = None) -> str:
    """Return a loadable reference for model `ref` (config key `key`), or raise ConfigError."""
    p = Path(ref).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ConfigError(
                f"{key}={ref} is a directory without config.json; point it at a "
                "Hugging Face model directory"
            )
        return str(p.resolve())
    if _looks_local(ref):
        raise ConfigError(f"{key}={ref} does not exist; point it at a model directory")
    return _check_hub(ref, key, "model", revision, _FIX_MODEL.format(key=key))


def resolve_dataset(ref: str, key: str) -> str:
    """Like `resolve_model` for a data set id or a local file/directory."""
    if Path(ref).expanduser().exists():
        return str(Path(ref).expanduser().resolve())
    if _looks_local(ref):
        raise ConfigError(f"{key}={ref} does not exist; point it at a local data set")
    fix = f"set {key}=/path/to/local/data, or run the tiny world: python -m c2f_exp"
    return _check_hub(ref, key, "dataset", None, fix)


def _check_hub(repo_id: str, key: str, repo_type: str, revision: str | None, fix: str) -> str:
    import huggingface_hub as hf

    probe = "config.json" if repo_type == "model" else "README.md"
    cached = hf.try_to_load_from_cache(repo_id, probe, revision=revision, repo_type=repo_type)
    if isinstance(cached, str):
        return repo_id
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ConfigError(
            f"cannot reach {repo_type} '{repo_id}' ({key}): HF_HUB_OFFLINE is set "
            f"and it is not in the local cache; {fix}"
        )
    try:
        api = hf.HfApi()
        if repo_type == "model":
            api.model_info(repo_id, revision=revision, timeout=TIMEOUT_S)
        else:
            api.dataset_info(repo_id, timeout=TIMEOUT_S)
    except Exception as e:  # offline, unknown id, gated repo without token, ...
        reason = type(e).__name__
        raise ConfigError(
            f"cannot reach {repo_type} '{repo_id}' ({key}) on the Hugging Face Hub "
            f"({reason}); {fix}"
        ) from None
    return repo_id


PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def weight_files(path: str | Path, key: str) -> list[Path]:
    """A local model directory's safetensors files (index first). Raises ConfigError for a
    directory with pickle weights only (never unpickled: it can run code) or none at all."""
    import json

    d = Path(path).expanduser()
    index = d / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = dict.fromkeys(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ConfigError(f"{key}={path}: {index.name} is not a valid index") from None
        files = [d / n for n in names]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ConfigError(
                f"{key}={path}: {index.name} lists missing shard(s) {missing[:3]}; "
                "copy the complete model directory"
            )
        return files
    files = sorted(d.glob("*.safetensors"))
    if not files:
        pickles = sorted(p.name for g in PICKLE_WEIGHTS for p in d.glob(g))
        what = f"only pickle weights ({', '.join(pickles[:3])})" if pickles else "no weights"
        raise ConfigError(
            f"{key}={path} has {what}; models load from safetensors only: convert it with "
            "save_pretrained(path, safe_serialization=True) where you trust the file"
        )
    return files


def check_weights(path: str | Path, key: str) -> list[Path]:
    """`weight_files`, each opened once (header parsed, coverage of the file checked): a
    truncated or padded safetensors file is a named error here, not a SafetensorError later."""
    from safetensors import safe_open

    files = weight_files(path, key)
    for f in files:
        try:
            with safe_open(str(f), framework="pt"):
                pass
        except Exception as e:  # SafetensorError: truncated, bad header; OSError
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ConfigError(
                f"{key}={path}: {f.name} is not a complete safetensors file ({first}); "
                "copy the model directory again (a copy was cut short?) or re-save it"
            ) from None
    return files


def check_local_weights(ref: str, key: str) -> None:
    """`check_weights` for a local directory; a hub id is checked when it loads (transformers
    with use_safetensors=True refuses a repo without safetensors)."""
    if Path(ref).expanduser().is_dir():
        check_weights(Path(ref).expanduser(), key)


def read_config_json(path: Path, key: str, error: type[Exception] = ConfigError) -> dict:
    """`<path>/config.json` as a dict; `error` naming `key`, the file and the fix when it is
    not valid JSON or not a JSON object (the merge stage passes its MergeError)."""
    import json

    f = path / "config.json"
    fix = "re-save the model with save_pretrained, or restore config.json from its source"
    try:
        cfg = json.loads(f.read_text())
    except OSError as e:
        raise error(f"{key}={path}: {f.name} cannot be read ({e.strerror}); {fix}") from None
    except ValueError as e:
        msg = getattr(e, "msg", str(e))
        raise error(f"{key}={path}: {f.name} is not valid JSON ({msg}); {fix}") from None
    if not isinstance(cfg, dict):
        raise error(
            f"{key}={path}: {f.name} must be a JSON object (got a {type(cfg).__name__}); {fix}"
        )
    return cfg


def check_config_json(ref: str, key: str) -> dict:
    """A local model directory's `config.json` as a dict (ConfigError naming `key` when it is
    missing, not JSON or not an object); {} for a hub id (checked when it loads)."""
    p = Path(ref).expanduser()
    if not p.is_dir():
        return {}
    if not (p / "config.json").is_file():
        raise ConfigError(f"{key}={ref} has no config.json; point it at a model directory")
    return read_config_json(p, key)
