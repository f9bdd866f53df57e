"""Composition of every experiment, debug=micro precedence, named errors for bad values."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from c2f_exp.config import STAGE_ORDER, validate
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


ENUM_FIELDS = ("tracker.mode", "merger.filter", "model.base.dtype", "stages[1]")


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


def test_stages_get_a_typed_config_with_enums(compose):
    """validate() returns the schema's dataclasses, every interpolation resolved and every
    choice an enum, which is what the pipeline hands to each stage."""
    from c2f_exp.coarse.config import CoarseConf, KLController
    from c2f_exp.config import C2FConfig, StageName
    from c2f_exp.core.choices import DType

    conf = validate(compose(["coarse.kl_controller=adaptive", "coarse.kl_target=6"]), STAGE_ORDER)
    assert isinstance(conf, C2FConfig) and isinstance(conf.coarse, CoarseConf)
    assert conf.coarse.kl_controller is KLController.adaptive
    assert conf.model.base.dtype is DType.float32
    assert all(isinstance(s, StageName) for s in conf.stages)
    assert conf.paths.cache_dir == f"{conf.paths.root_dir}/outputs/cache"  # resolved


def test_a_rule_names_the_node_it_failed_on(compose):
    """One class at two places (TrainConf: model.pretrain and model.sft) and a nested class
    (RolloutConf at coarse.rollout): the error names the full key of the node that failed."""
    for key in ("model.sft.lr", "model.pretrain.lr"):
        with pytest.raises(ConfigError) as e:
            validate(compose([f"{key}=-1"]), STAGE_ORDER)
        assert str(e.value) == f"{key} must be > 0 (got -1.0)"
    with pytest.raises(ConfigError, match=r"^coarse\.rollout\.gpu_memory_utilization must be"):
        validate(compose(["coarse.rollout.gpu_memory_utilization=2"]), STAGE_ORDER)


def test_schema_classes_check_their_values_when_built():
    """A Python user building a config gets the same rules, keyed relative to the class."""
    from c2f_exp.coarse.config import CoarseConf
    from c2f_exp.merge.config import MergerConf

    with pytest.raises(ConfigError, match=r"^minibatch_size must be a divisor of batch_size"):
        CoarseConf(name="mine", minibatch_size=5)
    with pytest.raises(ConfigError, match=r"^filter must be none for merger\.method=ties"):
        MergerConf(method="ties", filter="dare")
    assert CoarseConf(name="mine").lr == 2.0e-4  # the default, written once (in the schema)


def test_a_rule_in_an_unlisted_stage_group_still_counts(compose):
    """Every group's own rules run, whatever `stages` lists: a bad value is bad everywhere."""
    with pytest.raises(ConfigError, match=r"^merger\.density must be in \(0, 1\]"):
        validate(compose(["stages=[prepare]", "merger.density=2"]), STAGE_ORDER)
