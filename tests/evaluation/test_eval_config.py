"""The eval group's schema and semantic checks: every conf/eval/*.yaml composes; bad values fail
with one line naming the key."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from c2f_exp.cli_errors import one_line
from c2f_exp.core.errors import ConfigError
from c2f_exp.evaluation.config import EvalConf, validate_eval
from tests.helpers import CONF
from tests.helpers.eval import eval_cfg


@pytest.mark.parametrize("path", sorted((CONF / "eval").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_eval_yaml_fits_the_schema(path):
    merged = OmegaConf.merge(OmegaConf.structured(EvalConf), OmegaConf.load(path))
    assert merged.name == path.stem
    cfg = eval_cfg(group=path.stem)
    if merged.mt_bench.source == "fastchat":  # general11: hub data, a real judge
        OmegaConf.update(cfg, "data.source", "hub")
    validate_eval(cfg)


def test_general11_is_eleven_tasks():
    cfg = eval_cfg(group="general11")
    assert len(cfg.eval.lm_eval.tasks) == 11 == len(set(cfg.eval.lm_eval.tasks))
    assert set(cfg.eval.lm_eval.num_fewshot) <= set(cfg.eval.lm_eval.tasks)


def test_schema_rejects_unknown_keys_and_types():
    base = OmegaConf.structured(EvalConf)
    with pytest.raises(ConfigKeyError, match="judge_model"):
        OmegaConf.merge(base, {"mt_bench": {"judge_model": "gpt-4"}})
    with pytest.raises(ValidationError, match="max_new_tokens"):
        OmegaConf.merge(base, {"mt_bench": {"max_new_tokens": "many"}})


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("eval.lm_eval.batch_size", "big", "eval.lm_eval.batch_size must be 'auto'"),
        ("eval.lm_eval.dtype", "fp8", "eval.lm_eval.dtype must be one of"),
        ("eval.lm_eval.limit", 0, "eval.lm_eval.limit must be > 0"),
        ("eval.mt_bench.judge.type", "gpt", "eval.mt_bench.judge.type must be one of"),
        ("eval.mt_bench.source", "arena", "eval.mt_bench.source must be one of"),
        ("eval.mt_bench.temperatures", {"math": -1.0}, "temperatures.math must be >= 0"),
        ("eval.models", {"a/b": "/x"}, "eval.models.a/b must be a name"),
        ("eval.text_stats.repetition_n", 0, "repetition_n must be >= 1"),
    ],
)
def test_validate_eval_names_the_key(key, value, match):
    """Choice fields (enums) fail when the value is set, the rest in validate_eval; both name
    the key (the CLI prints a composition error through cli_errors.one_line)."""
    with pytest.raises((ConfigError, ValidationError)) as err:
        validate_eval(eval_cfg({key: value}))
    msg = str(err.value) if isinstance(err.value, ConfigError) else one_line(err.value)
    assert re.search(match, msg), msg


def test_judge_rules():
    oa = {
        "eval.mt_bench.source": "fastchat",
        "data.source": "hub",
        "eval.lm_eval.tasks": [],
        "eval.mt_bench.judge.type": "openai_compatible",
    }
    with pytest.raises(ConfigError, match=r"judge\.base_url must be set"):
        validate_eval(eval_cfg(oa))
    key = "sk-" + "x" * 20
    with pytest.raises(ConfigError, match="api_key_env must be the NAME") as err:
        validate_eval(
            eval_cfg(
                {
                    **oa,
                    "eval.mt_bench.judge.base_url": "http://h/v1",
                    "eval.mt_bench.judge.model": "m",
                    "eval.mt_bench.judge.api_key_env": key,
                }
            )
        )
    assert key not in str(err.value)
    with pytest.raises(ConfigError, match="gold scorer only knows the tiny world"):
        validate_eval(eval_cfg({**oa, "eval.mt_bench.judge.type": "tinyworld_gold"}))
    with pytest.raises(ConfigError, match="tasks without tinyworld_"):
        validate_eval(eval_cfg({"data.source": "hub", "eval.mt_bench.source": "fastchat"}))
    with pytest.raises(ConfigError, match="score_high must be set together"):
        validate_eval(eval_cfg({"eval.mt_bench.judge.score_low": 1.0}))


def test_stage_preflight_needs_prepare_for_the_tiny_world():
    from c2f_exp.evaluation.stage import EvalStage

    cfg = eval_cfg({"stages": ["eval"], "model.base.path": "/nonexistent/base"})
    with pytest.raises(ConfigError, match=r"model\.base\.path=/nonexistent/base does not exist"):
        EvalStage().preflight(cfg)
    cfg = eval_cfg({"stages": ["eval"]})
    with pytest.raises(ConfigError, match=r"model\.base\.path is null and prepare does not run"):
        EvalStage().preflight(cfg)


def test_config_subtree_is_json_and_hides_no_secret():
    from c2f_exp.evaluation.stage import EvalStage

    sub = EvalStage().config_subtree(eval_cfg())
    assert sub["eval"]["name"] == "tinyworld" and sub["model_paths"] == {
        "base": None,
        "instruct": None,
    }
    assert sub["eval"]["mt_bench"]["judge"]["api_key_env"] is None
