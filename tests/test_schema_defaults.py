"""The schema is the single source of defaults (c2f_exp/config.py, top comment).

Every default is written once, in the schema dataclasses, beside its reason. A YAML option
(conf/<group>/<option>.yaml, the default ones included; experiments, debug=micro and sweeps
too) is merged onto the schema and holds only what it changes: `name`, values for fields the
schema leaves MISSING, and values that differ from the schema's. A YAML value equal to its
schema default is a second copy that could drift: it fails here. And the default options change
no typed knob, so `python -m c2f_exp` runs the schema's defaults (`CoarseConf()` is the real
default). Choice fields are enums: a bad choice fails at composition, naming the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from c2f_exp.config import C2FConfig, register
from tests.helpers import CONF

# Free-form {name: value} dicts are an option's data (per-model chat flags, per-category
# temperatures, ...), merged key by key: a default option may fill them (eval/tinyworld's
# mt_bench.temperatures); a key the schema's dict already holds must still not be restated.
FREE_FORM_DICTS = {
    "eval.models",
    "eval.chat",
    "eval.lm_eval.num_fewshot",
    "eval.mt_bench.temperatures",
    "merger.module_overrides",
    "sweep.vars",
}
SCHEMA: dict[str, Any] = OmegaConf.to_container(
    OmegaConf.structured(C2FConfig), resolve=False, enum_to_str=True
)
# Not merged into the schema: Hydra's own launcher config, and this machine's settings.
NOT_SCHEMA = ("hydra", "local")


def restated(option: Any, schema: Any, path: str = "") -> list[str]:
    """Dotted keys (from `path`) where `option` repeats the schema's default value.

    A key the schema does not hold (a new entry of a free-form dict) or holds as MISSING
    (`name`, paths) is the option's own; a non-empty mapping is compared key by key; any other
    value (a scalar, null, a list, an empty mapping) is restated when it equals the default."""
    out = []
    for k, v in option.items():
        key = f"{path}.{k}" if path else str(k)
        if not isinstance(schema, dict) or k not in schema or schema[k] == "???":
            continue
        if isinstance(v, dict) and v and isinstance(schema[k], dict):
            out += restated(v, schema[k], key)
        elif v == schema[k]:
            out.append(key)
    return out


def package(path: Path, root: Path = CONF) -> str:
    """Where Hydra merges an option file: its `# @package` line, else its group (dotted)."""
    first = path.read_text().splitlines()[:1]
    if first and first[0].startswith("# @package"):
        pkg = first[0].split()[-1]
        return "" if pkg == "_global_" else pkg
    return ".".join(path.parent.relative_to(root).parts)


def restated_in(path: Path, root: Path = CONF) -> list[str]:
    """The keys of option file `path` (under config dir `root`, merged at its package) that
    restate a schema default."""
    pkg = package(path, root)
    schema = SCHEMA
    for part in filter(None, pkg.split(".")):
        schema = schema[part]
    option = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    own = {k: v for k, v in option.items() if k != "defaults" and not (k == "hydra" and not pkg)}
    return restated(own, schema, pkg)


def _default_options() -> list[Path]:
    """The files `python -m c2f_exp` composes: conf/config.yaml's defaults list, and the
    defaults lists of the options it selects (model/tiny -> model/instruct/tiny)."""
    found = []

    def follow(group: Path, entries: list[Any]) -> None:
        for entry in entries:
            if isinstance(entry, str):  # `_self_`, or another option of the same group
                if entry != "_self_" and entry != "c2f_schema":
                    found.append(group / f"{entry}.yaml")
                    follow(group, OmegaConf.load(found[-1]).get("defaults", []))
                continue
            ((sub, opt),) = entry.items()
            sub = sub.removeprefix("optional ")
            if opt is None or sub in NOT_SCHEMA:
                continue
            found.append(group / sub / f"{opt}.yaml")
            follow(group / sub, OmegaConf.load(found[-1]).get("defaults", []))

    follow(CONF, OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml"))["defaults"])
    return found


DEFAULT_OPTIONS = _default_options()
ALL_FILES = sorted(
    p
    for p in {*CONF.glob("*.yaml"), *CONF.glob("*/*.yaml"), *CONF.glob("*/*/*.yaml")}
    if p.relative_to(CONF).parts[0] not in NOT_SCHEMA
)
OTHER_FILES = [p for p in ALL_FILES if p not in DEFAULT_OPTIONS]


def _id(p: Path) -> str:
    return str(p.relative_to(CONF))


def test_the_option_files_are_found():
    names = {_id(p) for p in DEFAULT_OPTIONS}
    assert {"coarse/tinyworld.yaml", "model/instruct/tiny.yaml", "eval/tinyworld.yaml"} <= names
    assert {"tracker/wandb.yaml", "merger/knowledge_residue.yaml"} <= names
    others = {_id(p) for p in OTHER_FILES}
    assert {"config.yaml", "coarse/mistral_7b.yaml", "debug/micro.yaml"} <= others
    assert {"experiment/mistral_c2f.yaml", "sweep/merge_coefficient.yaml"} <= others
    assert {"model/instruct/mistral_7b_instruct.yaml", "length_schedule/fixed.yaml"} <= others


@pytest.mark.parametrize("path", DEFAULT_OPTIONS, ids=_id)
def test_default_option_restates_nothing(path):
    """A default option holds `name` and what the schema cannot hold (free-form data)."""
    assert not restated_in(path), (
        f"{_id(path)} restates schema defaults {restated_in(path)}: delete them there (the "
        "default and its reason live in the schema dataclass)"
    )


@pytest.mark.parametrize("path", OTHER_FILES, ids=_id)
def test_other_option_restates_nothing(path):
    """An option is merged onto the schema (not onto the default option): it holds only what
    it changes."""
    assert not restated_in(path), (
        f"{_id(path)} restates schema defaults {restated_in(path)}: delete them there"
    )


def _drift(schema: Any, composed: Any, path: str = "") -> dict[str, tuple[Any, Any]]:
    """{dotted key: (schema default, composed value)} wherever they differ (??? skipped)."""
    if path in FREE_FORM_DICTS:
        return {}
    if isinstance(schema, dict) and schema:
        out = {}
        for k, v in schema.items():
            sub = composed.get(k, "<absent>") if isinstance(composed, dict) else "<absent>"
            out.update(_drift(v, sub, f"{path}.{k}" if path else k))
        return out
    return {} if schema == "???" or schema == composed else {path: (schema, composed)}


def test_the_default_run_is_the_schema(compose):
    """The default options change no typed knob: the dataclasses' defaults are what runs."""
    composed = OmegaConf.to_container(compose(["tracker=wandb"]), resolve=False)
    drift = _drift(SCHEMA, composed)
    assert not drift, f"a default option changes a schema default (schema, YAML): {drift}"


def test_drift_is_detected():
    """The comparison is not vacuous: a changed value, a nested one and a list all count."""
    schema = {"a": 1, "b": {"c": [1, 2], "d": "???"}, "eval": {"chat": {"x": True}}}
    composed = {"a": 2, "b": {"c": [1, 3], "d": "set"}, "eval": {"chat": {"y": False}}}
    assert _drift(schema, composed) == {"a": (1, 2), "b.c": ([1, 2], [1, 3])}


def test_restatements_are_detected():
    """Equal scalars (an int for a float), nulls, lists, enums and empty mappings count;
    `name`, new free-form keys and changed values do not."""
    coarse = SCHEMA["coarse"]
    option = {
        "name": "x",
        "lr": 2.0e-4,
        "steps": 7,
        "seed": None,
        "gamma": 1,
        "kl_controller": "fixed",
        "rollout": {"engine": "vllm", "enforce_eager": True},
    }
    found = restated(option, coarse, "coarse")
    assert found == [f"coarse.{k}" for k in ("lr", "seed", "gamma", "kl_controller")] + [
        "coarse.rollout.enforce_eager"
    ]
    ev = SCHEMA["eval"]
    option = {"models": {}, "chat": {"base": False, "mine": True}, "key_metrics": ["x"]}
    option |= {"mt_bench": {"temperatures": {"more": 0.0}}}
    assert restated(option, ev, "eval") == ["eval.models", "eval.chat.base"]
    assert restated({"coefficient": [1.0, 0.0]}, SCHEMA["merger"]) == ["coefficient"]
    assert restated({"rehearsal": {}}, SCHEMA["model"]) == []  # {} vs null: a change


def test_a_restated_default_in_a_yaml_fails(tmp_path):
    """The file check itself: conf/coarse/tinyworld.yaml with `lr: 2.0e-4` put back."""
    text = (CONF / "coarse" / "tinyworld.yaml").read_text()
    planted = tmp_path / "coarse" / "tinyworld.yaml"
    planted.parent.mkdir()
    planted.write_text(text + "lr: 2.0e-4   # restated\n")
    assert restated_in(planted, tmp_path) == ["coarse.lr"]
    assert restated_in(CONF / "coarse" / "tinyworld.yaml") == []


@pytest.mark.parametrize(
    "override,message",
    [
        ("tracker.mode=onlien", "tracker.mode must be one of offline, online, disabled"),
        ("model.base.dtype=fp8", "model.base.dtype must be one of float32, bfloat16, float16"),
        ("data.source=s3", "data.source must be one of tinyworld, hub"),
        ("merger.method=soup", "merger.method must be one of knowledge_residue, linear"),
        ("merger.on_mismatch=ignore", "merger.on_mismatch must be one of error, keep_instruct"),
        ("merger.out_dtype=fp8", "merger.out_dtype must be one of float32"),
        ("eval.lm_eval.dtype=fp8", "eval.lm_eval.dtype must be one of auto, float32"),
        ("eval.mt_bench.judge.type=gpt", "eval.mt_bench.judge.type must be one of openai_comp"),
        ("eval.mt_bench.source=arena", "eval.mt_bench.source must be one of tinyworld, fastchat"),
    ],
)
def test_bad_choice_fails_at_composition_naming_the_key(compose, override, message):
    from c2f_exp.cli_errors import one_line

    with pytest.raises(Exception) as info:
        compose([override])
    assert message in one_line(info.value)
    assert "(got '" in one_line(info.value)


def test_choices_read_as_plain_strings(compose):
    """Enum members behave as their value wherever code or hashing reads them."""
    import json

    from c2f_exp.core.artifacts import config_hash

    cfg = compose(["merger.out_dtype=bfloat16"])
    assert cfg.merger.out_dtype == "bfloat16" and f"{cfg.tracker.mode}" == "offline"
    assert {"knowledge_residue": 1}[cfg.merger.method] == 1
    plain = OmegaConf.to_container(cfg.merger, resolve=True)
    assert json.dumps(plain["method"]) == '"knowledge_residue"'
    as_text = {k: str(v) if isinstance(v, str) else v for k, v in plain.items()}
    assert config_hash(plain) == config_hash(as_text)  # cache keys as before the enums
    yaml = pytest.importorskip("yaml")
    assert yaml.safe_load(yaml.dump(plain)) == yaml.safe_load(yaml.safe_dump(as_text))


def test_schema_rejects_bad_choice_without_hydra():
    register()
    node = OmegaConf.structured(C2FConfig)
    with pytest.raises(ValidationError, match=r"merger\.filter"):
        node.merger.filter = "sometimes"
