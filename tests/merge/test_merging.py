"""Merge math (c2f_exp.merge.methods): properties, hand-computed values, and mergekit 0.1.5 as
an oracle (task_arithmetic, ties, slerp, linear) on tiny fp32 models."""

from __future__ import annotations

import itertools

import pytest
import torch

from c2f_exp.core.errors import ConfigError
from c2f_exp.merge import methods
from c2f_exp.merge.config import MergerConf, check_coefficient_length, parse_size
from c2f_exp.merge.methods import Params, coefficient_for, dare_keep, merge_tensor
from c2f_exp.merge.stream import merge_models
from tests.helpers import check, compose_root
from tests.helpers.merge import build_trio, load_dir

FILTERS = [
    Params(),
    Params("magnitude", density=0.4),
    Params("dare", drop_p=0.5),
    Params("sign_agree"),
]


def _inputs(n=4000, seed=0, shape=None):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, generator=g)
    x = {
        "base": base,
        "instruct": base + 0.1 * torch.randn(n, generator=g),
        "coarse": base + 0.1 * torch.randn(n, generator=g),
    }
    return {k: v.view(shape) for k, v in x.items()} if shape else x


@pytest.mark.parametrize("p", FILTERS, ids=lambda p: p.filter)
def test_lambda_zero_is_instruct_bit_for_bit(p):
    x = _inputs()
    out = merge_tensor("knowledge_residue", x, 0.0, p, key=7)
    assert torch.equal(out.view(torch.int32), x["instruct"].view(torch.int32))


@pytest.mark.parametrize("p", FILTERS, ids=lambda p: p.filter)
def test_coarse_equal_base_gives_instruct(p):
    x = _inputs()
    x["coarse"] = x["base"].clone()
    assert torch.equal(merge_tensor("knowledge_residue", x, 0.7, p, key=7), x["instruct"])


def test_knowledge_residue_hand_computed_and_fp32_for_bf16_storage():
    x = _inputs(shape=(40, 100))
    out = merge_tensor("knowledge_residue", x, 0.3)
    assert out.shape == (40, 100)
    assert torch.allclose(out, x["instruct"] + 0.3 * (x["coarse"] - x["base"]), atol=1e-7)
    xb = {k: v.bfloat16() for k, v in x.items()}
    ob = merge_tensor("knowledge_residue", xb, 0.3)
    f = {k: v.float() for k, v in xb.items()}
    assert ob.dtype == torch.float32  # arithmetic in fp32 whatever the storage dtype
    assert torch.allclose(ob, f["instruct"] + 0.3 * (f["coarse"] - f["base"]), atol=1e-6)
    in_bf16 = xb["instruct"] + 0.3 * (xb["coarse"] - xb["base"])  # what fp32 math avoids
    assert float((ob - in_bf16.float()).abs().max()) > 1e-3


@pytest.mark.parametrize("p", FILTERS, ids=lambda p: p.filter)
def test_linear_in_lambda(p):
    x = _inputs()
    d = {
        lam: merge_tensor("knowledge_residue", x, lam, p, key=3) - x["instruct"]
        for lam in (0.25, 0.5, 0.75, -0.5)
    }
    assert torch.allclose(d[0.25] + d[0.5], d[0.75], atol=1e-6)
    assert torch.allclose(d[0.5], -d[-0.5], atol=1e-6)
    assert d[0.5].abs().max() > 0.01


def test_dare_keeps_expected_fraction_rescaled_and_seeded():
    n, p = 200_000, 0.3
    x = _inputs(n)
    r = x["coarse"] - x["base"]
    out = merge_tensor(
        "knowledge_residue", x, 1.0, Params("dare", drop_p=p), key=methods.tensor_key("w", seed=1)
    )
    added = out - x["instruct"]
    kept = added != 0
    sd = (p * (1 - p) / n) ** 0.5
    assert abs(kept.float().mean() - (1 - p)) < 5 * sd
    assert torch.allclose(added[kept], r[kept] / (1 - p), atol=1e-6)
    again = merge_tensor(
        "knowledge_residue", x, 1.0, Params("dare", drop_p=p), key=methods.tensor_key("w", seed=1)
    )
    other = merge_tensor(
        "knowledge_residue", x, 1.0, Params("dare", drop_p=p), key=methods.tensor_key("w", seed=2)
    )
    assert torch.equal(out, again) and not torch.equal(out, other)


def test_dare_mask_does_not_depend_on_blocking():
    n, key = 3 * methods.BLOCK + 123, 99
    whole = dare_keep(0, n, 0.5, key)
    for cuts in ([0, 1000, n], [0, methods.BLOCK - 5, 2 * methods.BLOCK + 7, n]):
        parts = [dare_keep(a, b - a, 0.5, key) for a, b in itertools.pairwise(cuts)]
        assert torch.equal(torch.cat(parts), whole)


def test_magnitude_keeps_top_density():
    x = _inputs(1000)
    out = merge_tensor("knowledge_residue", x, 1.0, Params("magnitude", density=0.25))
    r = (x["coarse"] - x["base"]).abs()
    added = out - x["instruct"]
    kept = added != 0
    assert int(kept.sum()) == 250
    assert r[kept].min() > r[~kept].max()


def test_sign_agree_drops_conflicting_entries():
    x = _inputs(1000)
    r, d = x["coarse"] - x["base"], x["instruct"] - x["base"]
    out = merge_tensor("knowledge_residue", x, 1.0, Params("sign_agree"))
    expect = x["instruct"] + torch.where(r * d >= 0, r, 0.0)
    assert torch.equal(out, expect)
    assert 0.3 < float((r * d >= 0).float().mean()) < 0.7  # both cases are exercised


def test_ties_by_hand():
    b = torch.zeros(4)
    x = {
        "base": b,
        "instruct": torch.tensor([1.0, -2.0, 3.0, 0.5]),
        "coarse": torch.tensor([2.0, 1.0, -1.0, 0.0]),
    }
    out = merge_tensor("ties", x, 0.5, Params(density=1.0))
    # weighted: i=[1,-2,3,.5], c*.5=[1,.5,-.5,0]; elected +,-,+,+; agreeing mean
    expect = torch.tensor([(1 + 1) / 1.5, -2 / 1.0, 3 / 1.0, 0.5 / 1.0])
    assert torch.allclose(out, expect)


def test_linear_and_slerp_endpoints():
    x = _inputs(1000, shape=(20, 50))
    for m in ("linear", "slerp"):
        assert torch.equal(merge_tensor(m, x, 0.0), x["instruct"])
        assert torch.allclose(merge_tensor(m, x, 1.0), x["coarse"], atol=1e-5)
    mid = merge_tensor("slerp", x, 0.5)
    # slerp keeps the norm between the endpoints' norms better than lerp (which shrinks it)
    lerp = merge_tensor("linear", x, 0.5)
    assert mid.norm() > lerp.norm()


def test_coefficient_for_gradient_and_overrides():
    assert coefficient_for("model.layers.3.mlp.up_proj.weight", [0.5], {}, 4) == 0.5
    grad = [0.0, 1.0]
    assert coefficient_for("model.layers.0.mlp.up_proj.weight", grad, {}, 5) == 0.0
    assert coefficient_for("model.layers.1.mlp.up_proj.weight", grad, {}, 5) == 0.25
    assert coefficient_for("model.layers.4.mlp.up_proj.weight", grad, {}, 5) == 1.0
    per_layer = [0.1, 0.2, 0.3]
    assert [
        coefficient_for(f"model.layers.{i}.x", per_layer, {}, 3) for i in range(3)
    ] == pytest.approx(per_layer)
    assert coefficient_for("model.embed_tokens.weight", grad, {}, 5) == 0.0  # mergekit: t=0
    ov = {"self_attn": [0.7], "layers.1.": [0.9]}
    assert coefficient_for("model.layers.1.self_attn.q_proj.weight", grad, ov, 5) == 0.7
    assert coefficient_for("model.layers.1.mlp.up_proj.weight", grad, ov, 5) == 0.9


@pytest.mark.parametrize(
    "field,value",
    [("method", "avg"), ("filter", "topk"), ("on_mismatch", "ignore"), ("out_dtype", "fp8")],
)
def test_bad_merger_choice_fails_when_the_config_is_built(field, value):
    """Choice fields are enums (core/choices.py): OmegaConf refuses a bad one, naming it."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ValidationError

    node = OmegaConf.structured(MergerConf)
    with pytest.raises(ValidationError, match=field):
        node[field] = value


BAD_VALUES = [
    ("density", 0.0, "density"),
    ("drop_p", 1.0, "drop_p"),
    ("coefficient", "abc", "coefficient"),
    ("coefficient", [], "coefficient"),
    ("shard_size", "lots", "shard_size"),
    ("module_overrides", {"mlp": "x"}, "module_overrides.mlp"),
]


@pytest.mark.parametrize("field,value,needle", BAD_VALUES)
def test_merger_conf_names_bad_key(field, value, needle):
    """Built directly, `MergerConf` refuses the value naming its key relative to the class."""
    with pytest.raises(ConfigError) as e:
        MergerConf(**{field: value})
    msg = str(e.value)
    assert msg.startswith(needle + " ") and "\n" not in msg


@pytest.mark.parametrize("field,value,needle", BAD_VALUES)
def test_bad_merger_value_named_with_full_key_before_any_stage(field, value, needle):
    """Through the pipeline's check (`config.validate`) the key is named from the root."""
    cfg = compose_root(["stages=[merge]"])
    cfg.merger[field] = value
    with pytest.raises(ConfigError) as e:
        check(cfg)
    msg = str(e.value)
    assert f"merger.{needle}" in msg and "\n" not in msg


def test_merger_conf_cross_field_rules():
    MergerConf()
    with pytest.raises(ConfigError, match=r"^filter .*method=ties"):
        MergerConf(method="ties", filter="dare")
    with pytest.raises(ConfigError, match=r"^coefficient.*linear"):
        MergerConf(method="linear", coefficient=1.5)
    for overrides, key in (
        (["merger=ties", "merger.filter=dare"], r"merger\.filter"),
        (["merger=linear", "merger.coefficient=1.5"], r"merger\.coefficient.*linear"),
    ):
        with pytest.raises(ConfigError, match=key):
            check(compose_root(["stages=[merge]", *overrides]))
    with pytest.raises(ConfigError, match=r"at most 2 values"):
        check_coefficient_length([0.1, 0.2, 0.3], 2)
    check_coefficient_length([0.1, 0.2], 2)
    assert parse_size("200MB") == 200_000_000 and parse_size(1024) == 1024
    assert parse_size("1.5GiB") == int(1.5 * 2**30)


# ---- oracle: mergekit 0.1.5 (import ~9 s on a cold cache: one module-scoped fixture) -------

ORACLE = {  # name -> (our MergerConf kwargs, mergekit config builder)
    "scalar": ({"coefficient": 0.3}, lambda d: _mk_ta(d, 0.3)),
    "gradient_override": (
        {"coefficient": [0.2, 0.8], "module_overrides": {"self_attn": 0.5}},
        lambda d: _mk_ta(d, [{"filter": "self_attn", "value": 0.5}, {"value": [0.2, 0.8]}]),
    ),
    "ties": (
        {"method": "ties", "coefficient": 0.6, "density": 0.5},
        lambda d: {
            "merge_method": "ties",
            "base_model": d["base"],
            "dtype": "float32",
            "models": [
                _m(d["instruct"], weight=1.0, density=0.5),
                _m(d["coarse"], weight=0.6, density=0.5),
            ],
        },
    ),
    "linear": (
        {"method": "linear", "coefficient": 0.3},
        lambda d: {
            "merge_method": "linear",
            "dtype": "float32",
            "models": [_m(d["instruct"], weight=0.7), _m(d["coarse"], weight=0.3)],
        },
    ),
    "slerp": (
        {"method": "slerp", "coefficient": 0.3},
        lambda d: {
            "merge_method": "slerp",
            "base_model": d["instruct"],
            "dtype": "float32",
            "parameters": {"t": 0.3},
            "models": [{"model": d["instruct"]}, {"model": d["coarse"]}],
        },
    ),
}


def _m(path, **params):
    return {"model": path, "parameters": params}


def _mk_ta(d, coarse_weight):
    """task_arithmetic over base with {instruct: 1, coarse: lambda} (global lambda stays 1)."""
    return {
        "merge_method": "task_arithmetic",
        "base_model": d["base"],
        "dtype": "float32",
        "models": [_m(d["instruct"], weight=1.0), _m(d["coarse"], weight=coarse_weight)],
    }


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    root = tmp_path_factory.mktemp("oracle")
    dirs = build_trio(root)
    opts = MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False)
    results = {}
    for name, (ours, theirs) in ORACLE.items():
        run_merge(MergeConfiguration.model_validate(theirs(dirs)), str(root / f"mk_{name}"), opts)
        out = root / f"ours_{name}"
        out.mkdir()
        merge_models(dirs, MergerConf(**ours), out)
        results[name] = (load_dir(out), load_dir(root / f"mk_{name}"))
    results["_instruct"] = load_dir(dirs["instruct"])
    return results


@pytest.mark.filterwarnings("ignore:numpy.core is deprecated:DeprecationWarning")
@pytest.mark.parametrize("name", list(ORACLE))
def test_equals_mergekit(oracle, name):
    ours, theirs = oracle[name]
    assert ours.keys() == theirs.keys()
    worst = max(float((ours[k] - theirs[k]).abs().max()) for k in ours)
    assert worst <= 1e-6, (name, worst)
    ins = oracle["_instruct"]
    assert max(float((ours[k] - ins[k]).abs().max()) for k in ours) > 1e-3  # not vacuous
