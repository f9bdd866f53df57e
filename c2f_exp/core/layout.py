"""Where things live, spelled once: the config tree and the files inside stage artifacts.

A low module (it imports only the standard library, `c2f_exp.core.hub` and `c2f_exp.core.errors`):
every stage package and tinyworld/ ask it, so the layout is never re-spelled
upward.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from c2f_exp.core.errors import ConfigError

# -- the config tree --------------------------------------------------------------------------
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # c2f_exp/
CHECKOUT_CONF = PACKAGE_DIR.parent / "conf"  # a source checkout (editable install)
PACKAGED_CONF = PACKAGE_DIR / "conf"  # a wheel: setup.py copies conf/ there at build time
CONF_PACKAGE = "c2f_exp.conf"


def conf_dir() -> Path:
    """The config root: the wheel's packaged copy when installed, else the checkout's conf/."""
    return PACKAGED_CONF if (PACKAGED_CONF / "config.yaml").is_file() else CHECKOUT_CONF


def hydra_config_path() -> str:
    """`config_path` for `hydra.main` in `c2f_exp/__main__.py`: the checkout's `../conf`
    (relative to that file, as before), or Hydra's `pkg://c2f_exp.conf` in an installed wheel."""
    return f"pkg://{CONF_PACKAGE}" if conf_dir() == PACKAGED_CONF else "../conf"


# -- inside stage artifacts -------------------------------------------------------------------
# Model directories inside each stage's artifact (role -> subdirectory; "" = the artifact itself).
MODEL_DIRS = {
    "prepare": {"base": "base", "instruct": "instruct"},
    "reward": {"reward": "model"},
    "coarse": {"coarse": "actor"},
    "merge": {"fine": ""},
}
ACTOR = MODEL_DIRS["coarse"]["coarse"]  # <coarse artifact>/actor: the Coarse Actor
RESULT = "result.json"  # <artifact>/result.json: metrics and file fingerprints (pipeline)
MODEL_REF = "model_ref.json"  # <reward artifact>/model_ref.json: a hub reward model's id
WORLD = "world.json"  # <prepare artifact>/world.json: the tiny world (tinyworld.World)
DATA = "data"  # <prepare artifact>/data/: the files below (README "The tiny world")
PREPARED_FILES = (
    "sft_train.jsonl",
    "sft_heldout.jsonl",
    "preferences_train.jsonl",
    "preferences_test.jsonl",
    "ppo_prompts.jsonl",
    "fact_pairs_heldout.jsonl",
    "fact_pairs_train.jsonl",
    "two_turn.jsonl",
    "mc_questions.jsonl",
)


def stage_model_dir(stage: str, art: str | Path, role: str | None = None) -> Path:
    """The model directory of `role` (default: the stage's only one) in a stage artifact."""
    dirs = MODEL_DIRS[stage]
    sub = dirs[role] if role is not None else next(iter(dirs.values()))
    return Path(art) / sub if sub else Path(art)


def world_file(prepare_dir: str | Path) -> Path:
    return Path(prepare_dir) / WORLD


def data_file(prepare_dir: str | Path, name: str) -> Path:
    """`<prepare artifact>/data/<name>`; `name` must be one of PREPARED_FILES (or corpus.txt)."""
    if name not in (*PREPARED_FILES, "corpus.txt"):
        raise ValueError(f"{name!r} is not a file the prepare stage writes ({PREPARED_FILES})")
    return Path(prepare_dir) / DATA / name


def rehearsing(cfg: Any) -> bool:
    """Hub models under `debug=micro` (`model.rehearsal` set): tiny-width copies stand in."""
    m = getattr(cfg, "model", None)
    return m is not None and getattr(m, "rehearsal", None) is not None and str(m.source) == "hub"


def model_dir(cfg: Any, upstream: Mapping[str, Mapping[str, Any]], role: str) -> str:
    """Where the `base` or `instruct` model of this run lives: `model.<role>.path` (a local
    directory or a resolved hub id) wins, else the prepare artifact's `<role>/`."""
    from c2f_exp.core import hub

    spec = getattr(cfg.model, role)
    if rehearsing(cfg) and "prepare" in upstream:  # the tiny-width copy prepare built
        return str(stage_model_dir("prepare", upstream["prepare"]["path"], role))
    if spec.path:
        return hub.resolve_model(spec.path, f"model.{role}.path", spec.revision)
    if "prepare" not in upstream:
        raise hub.ConfigError(
            f"model.{role}.path is null and the prepare stage did not run; "
            f"add prepare to stages or set model.{role}.path=/path/to/model"
        )
    return str(stage_model_dir("prepare", upstream["prepare"]["path"], role))


# -- JSONL: the one reader and writer ---------------------------------------------------------
def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSON-lines file (blank lines skipped)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def check_jsonl(
    path: str | Path,
    key: str,
    fields: Mapping[str, type | tuple[type, ...]],
    fix: str,
    extra: Callable[[dict], list[str]] | None = None,
) -> int:
    """Read a user's JSON-lines file whole (streamed) at preflight: every non-blank line a JSON
    object holding `fields` (name -> type), plus the fields `extra(row)` names as bad, and at
    least one row. Returns the row count; else ConfigError `<key>=<path> line <n> is not valid
    JSON (...) | lacks or mistypes <fields>; <fix>` (or `has no rows; <fix>`)."""
    import gzip

    n, p = 0, Path(path)
    opener = gzip.open if p.suffix == ".gz" else open  # hub clones hold *.jsonl.gz
    with opener(p, "rt", encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{key}={path} line {i}"
            try:
                row = json.loads(line)
            except ValueError as e:
                msg = getattr(e, "msg", str(e))
                raise ConfigError(f"{where} is not valid JSON ({msg}); {fix}") from None
            ok = isinstance(row, dict)
            bad = [
                k for k, t in fields.items() if not ok or k not in row or not isinstance(row[k], t)
            ]
            if not bad and extra:
                bad = extra(row)
            if bad:
                raise ConfigError(f"{where} lacks or mistypes {', '.join(bad)}; {fix}")
            n += 1
    if not n:
        raise ConfigError(f"{key}={path} has no rows; {fix}")
    return n


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Write rows as JSON lines, creating the parent directory."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
