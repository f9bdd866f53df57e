"""Composition of every experiment, debug=micro precedence, named errors for bad values."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from c2f_exp.config import validate
from c2f_exp.core.errors import ConfigError
from c2f_exp.pipeline import registry
from tests.conftest import CONF

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def test_experiments_exist():
    assert {"tiny_c2f", "mistral_c2f"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("exp", EXPERIMENTS)
@pytest.mark.parametrize("micro", [False, True])
def test_every_experiment_composes_and_validates(compose, exp, micro):
    cfg = compose(
        [f"+experiment={exp}", "stages=[prepare,reward,coarse,merge,eval]"]
        + (["debug=micro"] if micro else [])
    )
    assert cfg.experiment_name == exp
    validate(cfg, tuple(registry()))  # includes every stage group's own checks
    if micro:  # micro must shrink any experiment, whatever it selects
        micro_cfg = OmegaConf.load(CONF / "debug" / "micro.yaml")
        assert cfg.model.pretrain.steps == micro_cfg.model.pretrain.steps
        assert cfg.data.world.n_entities == micro_cfg.data.world.n_entities
        assert cfg.model.arch.hidden_size == micro_cfg.model.arch.hidden_size


def test_experiments_only_select_group_options():
    """Values set directly in an experiment would beat debug=micro: only names allowed."""
    for exp in EXPERIMENTS:
        raw = OmegaConf.load(CONF / "experiment" / f"{exp}.yaml")
        assert set(raw.keys()) <= {"defaults", "experiment_name"}, exp


def test_default_is_tiny_c2f(compose):
    plain, tiny = compose(), compose(["+experiment=tiny_c2f"])
    drop = lambda c: OmegaConf.to_container(c, resolve=False)
    assert drop(plain) == drop(tiny)
    assert plain.model.source == "tinyworld" and list(plain.stages) == [
        "prepare",
        "reward",
        "coarse",
        "merge",
        "eval",
    ]


def test_mistral_has_instruct_partner(compose):
    cfg = compose(["+experiment=mistral_c2f"])
    assert cfg.model.base.path == "mistralai/Mistral-7B-v0.1"
    assert "Instruct" in cfg.model.instruct.path
    assert cfg.model.base.trust_remote_code is False


def test_mistral_uses_7b_lengths_and_micro_still_shrinks(compose):
    ls = compose(["+experiment=mistral_c2f"]).length_schedule
    assert (ls.name, ls.l_min, ls.l_max) == ("continuous_max", 128, 1024)
    assert compose(["+experiment=mistral_c2f", "debug=micro"]).length_schedule.l_max == 16


def test_unknown_key_fails_at_composition_naming_it(compose):
    with pytest.raises(Exception, match="no_such_key"):
        compose(["model.no_such_key=1"])


def test_wrong_type_fails_at_composition_naming_key(compose):
    with pytest.raises(Exception, match="steps"):
        compose(["model.pretrain.steps=many"])


ENUM_FIELDS = ("tracker.mode", "merger.filter", "model.base.dtype")


@pytest.mark.parametrize(
    "override,needle",
    [
        ("tracker.mode=onlien", "tracker.mode"),
        ("length_schedule.l_min=512", "length_schedule"),
        ("merger.filter=sometimes", "merger.filter"),
        ("coarse.batch_size=0", "coarse.batch_size"),
        ("model.base.dtype=fp8", "model.base.dtype"),
        ("stages=[prepare,bogus]", "stages[1]"),
        ("model.pretrain.lr=0", "model.pretrain.lr"),
        ("data.world.heldout_fraction=1.5", "data.world.heldout_fraction"),
        ("model.arch.num_heads=3", "model.arch.num_heads"),
    ],
)
def test_bad_values_give_named_error(compose, override, needle):
    """Choice fields (enums) fail at composition, the rest in validate(); one line either way."""
    from c2f_exp.cli_errors import one_line

    all_stages = "stages=[prepare,reward,coarse,merge,eval]"
    overrides = [override] if override.startswith("stages=") else [override, all_stages]
    if needle in ENUM_FIELDS:
        with pytest.raises(Exception) as e:
            compose(overrides)
        msg = one_line(e.value)
        assert msg.startswith(f"{needle} must be one of")
    else:
        with pytest.raises(ConfigError) as e:
            validate(compose(overrides), tuple(registry()))
        msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_unimplemented_stage_is_refused(compose):
    cfg = compose(["stages=[prepare,coarse]"])
    with pytest.raises(ConfigError, match="not built yet"):
        validate(cfg, ("prepare",))


def test_stage_order_is_enforced(compose):
    cfg = compose(["stages=[coarse,prepare]"])
    with pytest.raises(ConfigError, match="pipeline order"):
        validate(cfg, ("prepare", "coarse"))


@pytest.mark.parametrize(
    ("override", "named", "hint"),
    [
        ("+model.pretrian.steps=5", "model.pretrian", "model.pretrain"),
        ("+lenght_schedule.l_min=4", "lenght_schedule", "length_schedule"),
        ("+merger.coeficient=3", "merger.coeficient", "merger.coefficient"),
    ],
)
def test_plus_prefixed_typos_are_refused(compose, override, named, hint):
    from c2f_exp.config import STAGE_ORDER, validate
    from c2f_exp.core.errors import ConfigError

    with pytest.raises(ConfigError, match=f"^{named} must be a key of the config schema"):
        validate(compose([override]), STAGE_ORDER)
    with pytest.raises(ConfigError, match=f"did you mean {hint}"):
        validate(compose([override]), STAGE_ORDER)


def test_free_form_dicts_stay_open(compose):
    from c2f_exp.config import STAGE_ORDER, validate

    validate(compose(["+eval.models.mine=/p", "+sweep.vars.x=1"]), STAGE_ORDER)


@pytest.mark.parametrize("objective", ["fine/mt_bench/average", "merge/residue_l2"])
def test_sweep_objective_must_name_a_stage_of_the_run(compose, objective):
    from c2f_exp.config import STAGE_ORDER, validate
    from c2f_exp.core.errors import ConfigError

    # no <stage>/ prefix; a stage this run does not have
    cfg = compose([f"sweep.objective={objective}", "stages=[prepare,reward,coarse]"])
    with pytest.raises(ConfigError, match=r"^sweep.objective must be '<stage>/.*; e\.g\. sweep"):
        validate(cfg, STAGE_ORDER)
    validate(compose(["sweep.objective=coarse/final_reward"]), STAGE_ORDER)  # a good one
