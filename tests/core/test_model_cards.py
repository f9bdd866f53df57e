"""Model cards (c2f_exp/core/model_card.py): Hub front matter that `huggingface_hub` reads back;
the merge stage's card. The pipeline's own cards are checked in test_lm_eval_cli.py."""

from __future__ import annotations

import pytest
from huggingface_hub import ModelCard
from omegaconf import OmegaConf

from c2f_exp.core.model_card import card_metadata, is_hub_id, write_model_card
from c2f_exp.merge.stage import MergeStage
from tests.helpers.merge import make_cfg, run_stage

HUB = "mistralai/Mistral-7B-v0.1"


def test_hub_ids_and_local_paths(tmp_path):
    assert is_hub_id(HUB) and is_hub_id("gpt2")
    assert not is_hub_id(str(tmp_path)) and not is_hub_id("./m") and not is_hub_id("a/b/c")
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").mkdir()
    assert not is_hub_id(str(tmp_path / "org" / "name"))


def test_card_round_trips_through_huggingface_hub(tmp_path):
    parents = {"policy": HUB, "reward": str(tmp_path)}
    path = write_model_card(
        tmp_path,
        role="coarse",
        description="PPO actor.",
        parents=parents,
        tags=["ppo", "coarse"],
        metrics={"kl": 0.125, "history": [1, 2]},
    )
    card = ModelCard.load(path)
    d = card.data.to_dict()
    assert d["base_model"] == HUB and d["base_model_relation"] == "finetune"
    assert d["library_name"] == "transformers"
    assert d["tags"] == ["c2f_exp", "coarse", "ppo"]  # no duplicate "coarse"
    assert d["c2f_exp"] == {"role": "coarse", "parents": parents}
    assert "| kl | 0.125 |" in card.text and "history" not in card.text  # scalars only
    assert card.text.strip().startswith("# Coarse Actor")


def test_local_parents_never_become_base_model(tmp_path):
    meta = card_metadata("instruct", {"base": str(tmp_path)})
    assert "base_model" not in meta and "base_model_relation" not in meta
    assert meta["c2f_exp"]["parents"] == {"base": str(tmp_path)}
    assert "base_model" not in card_metadata("base")


def test_merge_lists_every_hub_input_like_mergekit():
    parents = {"instruct": f"{HUB}-Instruct", "base": HUB, "coarse": "/runs/coarse/actor"}
    meta = card_metadata("fine", parents, ["merge"], {"method": "task_arithmetic"})
    assert meta["base_model"] == [f"{HUB}-Instruct", HUB]  # a list, as mergekit writes it
    assert meta["base_model_relation"] == "merge"
    assert meta["c2f_exp"]["recipe"] == {"method": "task_arithmetic"}


def test_bad_role_and_missing_dir_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"role must be one of .*got 'critic'"):
        card_metadata("critic")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        write_model_card(tmp_path / "nope", role="base", description="x")


def test_merge_stage_writes_a_hub_card_inside_the_artifact(trio, tmp_path):
    art, _ = run_stage(make_cfg(coefficient=0.5, **trio), tmp_path)
    d = ModelCard.load(art / "README.md").data.to_dict()
    assert d["tags"][:3] == ["c2f_exp", "fine", "merge"] and d["library_name"] == "transformers"
    assert d["c2f_exp"]["recipe"]["method"] == "knowledge_residue"
    assert d["c2f_exp"]["recipe"]["coefficient"] == [0.5]
    parents = d["c2f_exp"]["parents"]
    assert set(parents) == {"base", "instruct", "coarse"} and "base_model" not in d
    assert all(".tmp-" not in p for p in parents.values())


def test_merge_card_names_hub_inputs_by_their_id(tmp_path):
    cfg = OmegaConf.create(
        {
            "merger": {"base": None, "instruct": str(tmp_path), "coarse": None},
            "model": {"base": {"path": HUB}, "instruct": {"path": None}},
        }
    )
    ref = MergeStage._input_ref
    assert ref(cfg_ctx(cfg), "base", "/hf/cache/snapshots/x") == HUB
    assert ref(cfg_ctx(cfg), "instruct", "/resolved") == "/resolved"  # a local dir
    assert ref(cfg_ctx(cfg), "coarse", "/runs/coarse/actor") == "/runs/coarse/actor"


def cfg_ctx(cfg):
    from types import SimpleNamespace

    return SimpleNamespace(cfg=cfg)
