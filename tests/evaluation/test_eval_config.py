"""The eval group's schema and its rules: every conf/eval/*.yaml composes and passes the checks
the pipeline runs (`check`: EvalConf's classes, then config.validate's rules against the data
source); bad values fail with one line naming the full key."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from c2f_exp.core.errors import ConfigError
from c2f_exp.evaluation.config import EvalConf, JudgeConf, MTBenchConf, TextStatsConf
from tests.helpers import CONF, check, config_error
from tests.helpers.eval import eval_cfg, eval_root


@pytest.mark.parametrize("path", sorted((CONF / "eval").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_eval_yaml_fits_the_schema(path):
    merged = OmegaConf.merge(OmegaConf.structured(EvalConf), OmegaConf.load(path))
    assert merged.name == path.stem
    conf = eval_cfg(group=path.stem)  # general11: the hub run (hub data, a real judge)
    assert isinstance(conf.eval, EvalConf) and conf.eval.name == path.stem


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
        ("eval.lm_eval.batch_size", "big", r"eval\.lm_eval\.batch_size must be 'auto'"),
        ("eval.lm_eval.dtype", "fp8", r"eval\.lm_eval\.dtype must be one of"),
        ("eval.lm_eval.limit", 0, r"eval\.lm_eval\.limit must be > 0"),
        ("eval.lm_eval.num_fewshot", {"t": -1}, r"eval\.lm_eval\.num_fewshot\.t must be >= 0"),
        ("eval.mt_bench.judge.type", "gpt", r"eval\.mt_bench\.judge\.type must be one of"),
        ("eval.mt_bench.source", "arena", r"eval\.mt_bench\.source must be one of"),
        (
            "eval.mt_bench.temperatures",
            {"math": -1.0},
            r"eval\.mt_bench\.temperatures\.math must be >= 0",
        ),
        ("eval.mt_bench.limit", 0, r"eval\.mt_bench\.limit must be >= 1"),
        ("eval.mt_bench.max_new_tokens", 0, r"eval\.mt_bench\.max_new_tokens must be >= 1"),
        ("eval.mt_bench.judge.retries", -1, r"eval\.mt_bench\.judge\.retries must be >= 0"),
        ("eval.models", {"a/b": "/x"}, r"eval\.models\.a/b must be a name"),
        ("eval.num_threads", 0, r"eval\.num_threads must be >= 1"),
        ("eval.seed", -1, r"eval\.seed must be an integer in"),
        ("eval.text_stats.repetition_n", 0, r"eval\.text_stats\.repetition_n must be >= 1"),
    ],
)
def test_bad_eval_values_name_the_key(key, value, match):
    """Choice fields (enums) fail when the value is set, the rest in the classes' rules when
    the config is checked (`check`, as the pipeline before any stage); both name the full key
    (the CLI prints a composition error through cli_errors.one_line)."""
    msg = config_error(lambda: check(eval_root({key: value})))
    assert re.search(match, msg), msg


def test_judge_rules():
    """The judge's rules (MTBenchConf, only when MT-Bench runs) and the rules against the data
    source (config.validate: tiny-world tasks and questions need data=tinyworld)."""
    oa = {
        "eval.mt_bench.source": "fastchat",
        "eval.lm_eval.tasks": [],
        "eval.mt_bench.judge.type": "openai_compatible",
    }
    with pytest.raises(ConfigError, match=r"eval\.mt_bench\.judge\.base_url must be set"):
        check(eval_root(oa, hub=True))
    key = "sk-" + "x" * 20
    over = {
        **oa,
        "eval.mt_bench.judge.base_url": "http://h/v1",
        "eval.mt_bench.judge.model": "m",
    }
    with pytest.raises(
        ConfigError, match=r"eval\.mt_bench\.judge\.api_key_env must be the NAME"
    ) as err:
        check(eval_root({**over, "eval.mt_bench.judge.api_key_env": key}, hub=True))
    assert key not in str(err.value)
    check(eval_root(over, hub=True))  # a complete API judge on hub data
    with pytest.raises(ConfigError, match=r"eval\.mt_bench\.judge\.model must be a local"):
        check(eval_root({"eval.mt_bench.judge.type": "hf_local"}))
    with pytest.raises(ConfigError, match="gold scorer only knows the tiny world") as err:
        check(eval_root({**oa, "eval.mt_bench.judge.type": "tinyworld_gold"}, hub=True))
    assert "eval.mt_bench.judge.type must be" in str(err.value)
    with pytest.raises(
        ConfigError, match=r"eval\.mt_bench\.judge\.score_high must be set together"
    ):
        check(eval_root({"eval.mt_bench.judge.score_low": 1.0}))
    # MT-Bench off: its judge is not checked
    check(eval_root({"eval.mt_bench.enabled": False, "eval.mt_bench.judge.type": "hf_local"}))
    # against the data source (hub models and data: +experiment=mistral_c2f)
    off = {"eval.mt_bench.enabled": False}
    with pytest.raises(
        ConfigError, match=r"eval\.lm_eval\.tasks must be tasks without tinyworld_"
    ):
        check(eval_root({**off, "eval.lm_eval.tasks": ["tinyworld_mc"]}, hub=True))
    tiny_q = {"eval.lm_eval.tasks": [], "eval.mt_bench.source": "tinyworld"}
    with pytest.raises(ConfigError, match=r"eval\.mt_bench\.source must be fastchat for hub"):
        check(eval_root(tiny_q, group="general11"))
    check(eval_root({**tiny_q, "eval.mt_bench.question_file": "/q.jsonl"}, group="general11"))


def test_classes_check_their_own_fields():
    """Built directly, a class names the key relative to itself."""
    with pytest.raises(ConfigError, match=r"^judge\.base_url must be set"):
        MTBenchConf(source="fastchat", judge=JudgeConf(type="openai_compatible"))
    MTBenchConf(enabled=False, source="fastchat", judge=JudgeConf(type="openai_compatible"))
    with pytest.raises(ConfigError, match=r"^text_stats\.repetition_n must be >= 1"):
        EvalConf(name="x", text_stats=TextStatsConf(repetition_n=0))


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
