"""The data-source seam (c2f_exp/sources.py): the registry, each source's data and checks, and
that every stage package and config.py ask the source instead of comparing its name."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from c2f_exp.core import layout
from c2f_exp.core.errors import ConfigError
from c2f_exp.sources import HubSource, TinyWorldSource, get_source, source_for

PKG = Path(__file__).resolve().parents[1] / "c2f_exp"
STAGE_PACKAGES = ("prepare", "reward", "coarse", "merge", "evaluation")
NAMES = {"tinyworld", "hub", "fastchat"}  # the source choices' literal names
CHECKED = [
    *(p for stage in STAGE_PACKAGES for p in sorted((PKG / stage).rglob("*.py"))),
    PKG / "config.py",
]


# ---- the registry ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key, name, cls",
    [
        ("data.source", "tinyworld", TinyWorldSource),
        ("data.source", "hub", HubSource),
        ("model.source", "tinyworld", TinyWorldSource),
        ("model.source", "hub", HubSource),
        ("reward.source", "tinyworld", TinyWorldSource),
        ("reward.source", "hub", HubSource),
        ("eval.mt_bench.source", "tinyworld", TinyWorldSource),
        ("eval.mt_bench.source", "fastchat", HubSource),
    ],
)
def test_registry_picks_the_class_of_each_choice(key, name, cls):
    src = get_source(name, key)
    assert type(src) is cls and src is get_source(name, key)  # stateless: one instance
    cfg = OmegaConf.create({})
    OmegaConf.update(cfg, key, name, force_add=True)
    assert type(source_for(cfg, key)) is cls


def test_composed_configs_pick_their_sources(compose):
    tiny = compose()
    for key in ("data.source", "model.source", "reward.source", "eval.mt_bench.source"):
        assert isinstance(source_for(tiny, key), TinyWorldSource), key
    hub = compose(["+experiment=mistral_c2f"])
    for key in ("data.source", "model.source", "reward.source", "eval.mt_bench.source"):
        assert isinstance(source_for(hub, key), HubSource), key
    assert source_for(tiny).name == "tinyworld" and source_for(hub).name == "hub"


@pytest.mark.parametrize(
    "key, name, needle",
    [
        ("data.source", "s3", "data.source must be one of tinyworld, hub (got 's3')"),
        ("reward.source", "web", "reward.source must be one of tinyworld, hub (got 'web')"),
        ("eval.mt_bench.source", "hub", "eval.mt_bench.source must be one of tinyworld, fastchat"),
    ],
)
def test_unknown_source_is_a_one_line_error_naming_the_key(key, name, needle):
    with pytest.raises(ConfigError) as e:
        get_source(name, key)
    assert needle in str(e.value) and "\n" not in str(e.value)
    cfg = SimpleNamespace(reward=SimpleNamespace(source=name), data=SimpleNamespace(source=name))
    if key != "eval.mt_bench.source":
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            source_for(cfg, key)


def test_capabilities():
    tiny, hub = TinyWorldSource(), HubSource()
    assert tiny.builds_models and tiny.reads_prepare and tiny.has_gold_scorer
    assert not (hub.builds_models or hub.reads_prepare or hub.has_gold_scorer)


# ---- nobody outside the seam compares a source's name ---------------------------------------
def _name_comparisons(src: str) -> list[str]:
    """`<x>.source` (or a variable `source`) compared with a literal source name, as text."""

    def is_source(n: ast.AST) -> bool:
        return (isinstance(n, ast.Attribute) and n.attr == "source") or (
            isinstance(n, ast.Name) and n.id == "source"
        )

    def literals(n: ast.AST) -> set:
        elts = n.elts if isinstance(n, (ast.Tuple, ast.List, ast.Set)) else [n]
        return {e.value for e in elts if isinstance(e, ast.Constant)}

    hits = []
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(map(is_source, sides)) and set().union(*map(literals, sides)) & NAMES:
                hits.append(f"line {node.lineno}: {ast.unparse(node)}")
    return hits


def test_no_branch_on_a_source_name_in_stages_and_rl():
    hits = [
        f"{p.relative_to(PKG.parent)} {h}"
        for p in CHECKED
        for h in _name_comparisons(p.read_text())
    ]
    assert not hits, "ask c2f_exp.sources instead of comparing names:\n" + "\n".join(hits)


def test_the_name_check_is_not_vacuous():
    planted = (
        "if cfg.data.source == 'tinyworld': pass\n"
        "if 'hub' != r.source: pass\n"
        "if m.source in ('fastchat', 'x'): pass\n"
        "if source != 'tinyworld': pass\n"
        "if cfg.data.source == other: pass\n"  # not a literal name: fine
        "if r.format == 'hub': pass\n"  # not a source: fine
    )
    assert [h.split(":")[0] for h in _name_comparisons(planted)] == [
        "line 1",
        "line 2",
        "line 3",
        "line 4",
    ]
    assert len(CHECKED) > 20 and all(p.is_file() for p in CHECKED)


# ---- the tiny world -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A prepare-like artifact without models: world.json and the data files the sources read."""
    from c2f_exp.tinyworld import data
    from c2f_exp.tinyworld.world import generate_world

    root = tmp_path_factory.mktemp("prep")
    world = generate_world(0, 8, 0.5)
    layout.world_file(root).write_text(world.to_json())
    files = {
        "ppo_prompts.jsonl": data.ppo_prompts(world, world.entities),
        "preferences_train.jsonl": data.preference_pairs(world, world.train_entities, 4, 3),
        "preferences_test.jsonl": data.preference_pairs(world, world.heldout_entities, 5, 2),
    }
    for name, rows in files.items():
        layout.write_jsonl(layout.data_file(root, name), rows)
    return root


def _coarse_cfg(split: str = "train", eval_prompts: int = 2):
    return OmegaConf.create({"coarse": {"prompt_split": split, "eval_prompts": eval_prompts}})


def test_tiny_ppo_prompts_follow_the_split(prepared):
    from c2f_exp.tinyworld.world import World

    world = World.load(layout.world_file(prepared))
    src = TinyWorldSource()
    texts, turns, held, where = src.ppo_prompts(_coarse_cfg("train", 2), prepared)
    assert turns is texts and where == str(layout.data_file(prepared, "ppo_prompts.jsonl"))
    assert len(texts) == len(world.train_entities)
    assert all(any(e in t for e in world.train_entities) for t in texts)
    assert len(held) == 2 and {r["entity"] for r in held} <= set(world.heldout_entities)
    every, _, _, _ = src.ppo_prompts(_coarse_cfg("all", 0), prepared)
    assert len(every) == len(world.entities)


def test_tiny_ppo_prompts_of_a_missing_file_are_empty(tmp_path, prepared):
    (tmp_path / "world.json").write_text(layout.world_file(prepared).read_text())
    texts, _, held, where = TinyWorldSource().ppo_prompts(_coarse_cfg(), tmp_path)
    assert texts == [] and held == [] and where.endswith("ppo_prompts.jsonl")


def _reward(**kw):
    r = {"max_train_pairs": None, "max_test_pairs": None, "path": None}
    r["train"] = {"margin_scale": kw.pop("margin_scale", 0.0)}
    return OmegaConf.create({**r, **kw})


def test_tiny_preference_pairs_carry_the_gold_margin(prepared):
    src = TinyWorldSource()
    raw = layout.read_jsonl(layout.data_file(prepared, "preferences_train.jsonl"))
    train, test = src.preference_pairs(_reward(), prepared)
    assert len(train) == len(raw) and test and all(p["margin"] == 0.0 for p in train)
    assert set(train[0]) == {"prompt", "chosen", "rejected", "margin"}
    train, _ = src.preference_pairs(_reward(margin_scale=0.5, max_train_pairs=2), prepared)
    want = [0.5 * (p["gold_chosen"] - p["gold_rejected"]) for p in raw[:2]]
    assert [p["margin"] for p in train] == pytest.approx(want)


def test_tiny_preference_pairs_name_a_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"preferences_train\.jsonl does not exist; run the"):
        TinyWorldSource().preference_pairs(_reward(), tmp_path)


# ---- what prepare does, and the cache key ---------------------------------------------------
def _old_prepare_subtree(cfg) -> dict:
    """PrepareStage.config_subtree as it was before the seam (the cache key must not move)."""
    sub = {"model": cfg.model, "seed": cfg.seed}
    if cfg.model.source == "tinyworld":
        sub["world"] = cfg.data.world
    else:
        sub["hub_data"] = cfg.data.hub
    out = OmegaConf.to_container(OmegaConf.create(sub), resolve=True)
    out["model"].pop("rehearsal")  # a field added since (debug=micro on hub models); null here
    return out


@pytest.mark.parametrize("overrides", [[], ["+experiment=mistral_c2f"]])
def test_prepare_cache_key_is_unchanged(compose, overrides):
    from c2f_exp.core.artifacts import config_hash
    from c2f_exp.prepare.stage import PrepareStage

    cfg = compose(overrides)
    new = PrepareStage().config_subtree(cfg)
    assert new == _old_prepare_subtree(cfg)
    assert config_hash(new) == config_hash(_old_prepare_subtree(cfg))


def test_hub_model_refs_resolve_local_dirs(compose, tiny_artifact):
    cfg = compose(["+experiment=mistral_c2f"])
    for role in ("base", "instruct"):
        OmegaConf.update(cfg, f"model.{role}.path", str(tiny_artifact / role))
    refs = HubSource().model_refs(cfg)
    assert refs == {r: str((tiny_artifact / r).resolve()) for r in ("base", "instruct")}
    HubSource().check_models(cfg)  # safetensors there: passes


def test_hub_checks_name_the_missing_data(compose, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = compose(["+experiment=mistral_c2f"])
    OmegaConf.update(cfg, "data.hub.preference_dataset", None)  # null: not checked
    OmegaConf.update(cfg, "data.hub.prompt_dataset", str(tmp_path / "nowhere.jsonl"))
    with pytest.raises(ConfigError, match=r"data\.hub\.prompt_dataset=.*does not exist"):
        HubSource().check_data(cfg)
    r = OmegaConf.create({"dataset": str(tmp_path / "none.jsonl")})
    with pytest.raises(ConfigError, match=r"reward\.dataset=.*does not exist"):
        HubSource().check_reward_data(r)
    tiny = TinyWorldSource()  # nothing outside the run to check
    assert tiny.check_models(cfg) is None and tiny.check_data(cfg) is None
    assert tiny.check_reward_data(r) is None


def _hh_file(path: Path) -> Path:
    conv = "\n\nHuman: hi there\n\nAssistant: hello\n\nHuman: tell me a joke\n\nAssistant: "
    short = "\n\nHuman: q\n\nAssistant: "
    rows = [
        {"chosen": conv + "why not", "rejected": conv + "no"},
        {"chosen": short + "good", "rejected": short + "bad"},
        {"chosen": short + "held", "rejected": short + "out"},  # one file: the test split
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_hub_prompts_and_pairs_from_an_hh_file(tmp_path):
    hh = str(_hh_file(tmp_path / "hh.jsonl"))
    cfg = OmegaConf.create({"data": {"hub": {"prompt_dataset": hh, "prompt_split": "train"}}})
    texts, turns, held, where = HubSource().ppo_prompts(cfg, None)
    assert texts[0] == (
        "\n\nHuman: hi there\n\nAssistant: hello\n\nHuman: tell me a joke\n\nAssistant:"
    )
    assert texts[1] == "\n\nHuman: q\n\nAssistant:" and turns[1] == [
        {"role": "user", "content": "q"}
    ]
    assert held == [] and where == f"data.hub.prompt_dataset={Path(hh).resolve()}"
    r = _reward(dataset=hh, train_split="train", test_split="train")
    train, test = HubSource().preference_pairs(r, None)
    assert [p["chosen"] for p in test] == ["why not", "good"] and len(train) == 2


# ---- what a source choice requires of other keys (config.py, before any stage) ---------------
def test_model_rules(compose):
    from tests.helpers import check

    check(compose())
    with pytest.raises(ConfigError, match=r"data\.source must be tinyworld when model=tiny"):
        check(compose(["data=hub"]))
    check(compose(["+experiment=mistral_c2f"]))
    with pytest.raises(ConfigError, match=r"model\.instruct\.path must be a hub id"):
        check(compose(["+experiment=mistral_c2f", "model.instruct.path=null"]))


def test_reward_rules(compose):
    from tests.helpers import check

    hub = ["+experiment=mistral_c2f"]
    check(compose(hub))
    with pytest.raises(ConfigError, match=r"reward\.dataset must be a hub preference data set"):
        check(compose([*hub, "reward.dataset=null"]))
    check(compose([*hub, "reward.dataset=null", "reward.path=/some/rm"]))  # a ready RM: no data
    with pytest.raises(ConfigError, match=r"reward\.source must be hub when model\.source=hub"):
        check(compose([*hub, "reward=tinyworld"]))
    # only runs that train a reward model are held to it
    no_reward = ["stages=[prepare,coarse]", "coarse.reward_model=/rm"]
    check(compose([*hub, "reward=tinyworld", *no_reward]))
