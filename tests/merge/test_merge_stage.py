"""The `merge` stage (c2f_exp.merge.stage) driven directly, as the pipeline would drive it:
preflight, run into an atomic artifact dir, merge_recipe.json, merger.output, bad input."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from c2f_exp.core.errors import C2FError, ConfigError
from c2f_exp.merge import config as mconfig
from c2f_exp.merge import methods, output
from c2f_exp.merge.config import MergerConf
from c2f_exp.merge.stage import RECIPE, MergeStage
from tests.conftest import tiny_mistral_config
from tests.helpers import CONF, check, compose_root
from tests.helpers.merge import TINY, load_dir, make_cfg, run_stage, tiny_mistral_state


def test_registry_matches_conf_files():
    stems = {p.stem for p in (CONF / "merger").glob("*.yaml")}
    assert stems == set(methods.METHODS) == set(mconfig.METHODS) == set(mconfig.ROLES)


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "merger").glob("*.yaml")))
def test_conf_files_fit_schema_and_validate(name):
    node = OmegaConf.merge(
        OmegaConf.structured(MergerConf), OmegaConf.load(CONF / "merger" / f"{name}.yaml")
    )
    assert node.method == name
    m = OmegaConf.to_object(node)  # runs MergerConf.__post_init__
    assert isinstance(m, MergerConf) and m.method == name
    assert check(compose_root(["stages=[merge]", f"merger={name}"])).merger.method == name


def test_run_writes_model_recipe_and_card(trio, tmp_path):
    cfg = make_cfg(coefficient=[0.2, 0.6], shard_size="30KB", **trio)
    art, metrics = run_stage(cfg, tmp_path)
    recipe = json.loads((art / RECIPE).read_text())
    assert recipe["method"] == "knowledge_residue" and recipe["coefficient"] == [0.2, 0.6]
    assert set(recipe["inputs"]) == {"base", "instruct", "coarse"}
    assert all(len(v["fingerprint"]) == 64 for v in recipe["inputs"].values())
    assert recipe["residue"]["survival"] == 1.0  # fp32 output keeps every residue entry
    assert metrics["residue_survival"] == 1.0 and metrics["shards"] > 1
    assert recipe["tensors"]["model.layers.1.mlp.up_proj.weight"]["lambda"] == pytest.approx(0.6)
    assert "knowledge_residue" in (art / "README.md").read_text()
    got, sd = load_dir(art), {r: load_dir(trio[r]) for r in ("base", "instruct", "coarse")}
    name = "model.layers.0.self_attn.q_proj.weight"
    expect = sd["instruct"][name] + 0.2 * (sd["coarse"][name] - sd["base"][name])
    assert torch.allclose(got[name], expect, atol=1e-7)
    assert (tmp_path / "run" / "merge" / "metrics.jsonl").is_file()


def test_inputs_from_upstream_artifacts(trio, tmp_path):
    prep, coarse = tmp_path / "prep", tmp_path / "coarse_art"
    shutil.copytree(trio["base"], prep / "base")
    shutil.copytree(trio["instruct"], prep / "instruct")
    shutil.copytree(trio["coarse"], coarse / "actor")
    cfg = make_cfg(stages=("prepare", "coarse", "merge"), coefficient=0.5)
    up = {"prepare": {"path": str(prep)}, "coarse": {"path": str(coarse)}}
    art, _ = run_stage(cfg, tmp_path / "t", upstream=up)
    recipe = json.loads((art / RECIPE).read_text())
    assert recipe["inputs"]["coarse"]["path"] == str(coarse / "actor")
    assert recipe["inputs"]["base"]["path"] == str((prep / "base").resolve())


def test_output_written_atomically_and_not_overwritten(trio, tmp_path):
    dest = tmp_path / "fine"
    cfg = make_cfg(output=str(dest), **trio)
    art, _ = run_stage(cfg, tmp_path / "a")
    assert load_dir(dest).keys() == load_dir(art).keys()
    assert (dest / RECIPE).is_file() and not (dest / "DONE").exists()
    with pytest.raises(C2FError, match=r"merger.output=.*already exists.*overwrite=true"):
        MergeStage().preflight(cfg)
    cfg2 = make_cfg(output=str(dest), overwrite=True, coefficient=0.1, **trio)
    run_stage(cfg2, tmp_path / "b")
    assert json.loads((dest / RECIPE).read_text())["coefficient"] == [0.1]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_crash_mid_write_leaves_nothing_complete(trio, tmp_path, monkeypatch):
    """NaN in the last tensor of coarse: named error, no artifact, no merger.output."""
    from c2f_exp.merge import io

    opened = []

    class CountingWriter(io.ShardWriter):
        def __init__(self, path, entries):
            opened.append(path.name)
            super().__init__(path, entries)

    monkeypatch.setattr(io, "ShardWriter", CountingWriter)
    bad = tmp_path / "coarse_nan"
    shutil.copytree(trio["coarse"], bad)
    last = sorted(bad.glob("*.safetensors"))[-1]
    from safetensors.torch import load_file

    part = load_file(last)
    victim = "model.norm.weight" if "model.norm.weight" in part else sorted(part)[-1]
    part[victim][0] = float("nan")
    save_file(part, last)
    dest = tmp_path / "fine"
    cfg = make_cfg(output=str(dest), shard_size="20KB", **{**trio, "coarse": str(bad)})
    with pytest.raises(C2FError) as e:
        run_stage(cfg, tmp_path)
    msg = str(e.value)
    assert "merger.coarse" in msg and victim in msg and "NaN" in msg and "\n" not in msg
    assert not (tmp_path / "cache" / "merge" / "k").exists() and not dest.exists()
    assert [p.name for p in (tmp_path / "cache" / "merge").iterdir()] == []
    assert len(opened) > 1  # the failure came mid-write, after earlier shards were written


@pytest.mark.parametrize("policy", ["error", "keep_instruct", "skip"])
def test_mismatch_policies(trio, tmp_path, policy):
    """coarse with a resized vocabulary (embed rows) and a missing tensor."""
    odd = tmp_path / "coarse_odd"
    odd.mkdir()
    shutil.copy(Path(trio["coarse"]) / "config.json", odd)
    sd = load_dir(trio["coarse"])
    sd["model.embed_tokens.weight"] = torch.randn(70, 32)
    del sd["model.layers.0.mlp.up_proj.weight"]
    save_file(sd, odd / "model.safetensors")
    cfg = make_cfg(on_mismatch=policy, coefficient=1.0, **{**trio, "coarse": str(odd)})
    if policy == "error":
        with pytest.raises(C2FError, match=r"embed_tokens.*shape.*on_mismatch"):
            MergeStage().preflight(cfg)
        return
    art, _ = run_stage(cfg, tmp_path)
    got, ins = load_dir(art), load_dir(trio["instruct"])
    for name in ("model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"):
        if policy == "skip":
            assert name not in got
        else:
            assert torch.equal(got[name], ins[name])
    other = "model.layers.1.mlp.up_proj.weight"
    assert not torch.equal(got[other], ins[other])


def test_preflight_refuses_bad_input_before_work(trio, tmp_path):
    with pytest.raises(ConfigError, match=r"merger.coefficient.*at most 2"):
        MergeStage().preflight(make_cfg(coefficient=[0.1, 0.2, 0.3], **trio))
    with pytest.raises(C2FError, match=r"merger.base=.*neither a local directory"):
        MergeStage().preflight(make_cfg(**{**trio, "base": str(tmp_path / "missing")}))
    with pytest.raises(ConfigError, match=r"merger.coarse.*coarse stage"):
        MergeStage().preflight(make_cfg(base=trio["base"], instruct=trio["instruct"]))
    deeper = tmp_path / "deep"
    shutil.copytree(trio["coarse"], deeper)
    cfg_json = json.loads((deeper / "config.json").read_text())
    cfg_json["num_hidden_layers"] = 3
    (deeper / "config.json").write_text(json.dumps(cfg_json))
    with pytest.raises(C2FError, match=r"merger.coarse: architecture"):
        MergeStage().preflight(make_cfg(**{**trio, "coarse": str(deeper)}))


def test_config_subtree_tracks_content_and_settings(trio, tmp_path):
    stage = MergeStage()
    a = stage.config_subtree(make_cfg(**trio))
    assert a == stage.config_subtree(make_cfg(**trio))
    assert a != stage.config_subtree(make_cfg(coefficient=0.5, **trio))
    copy = tmp_path / "coarse2"
    shutil.copytree(trio["coarse"], copy)
    same = stage.config_subtree(make_cfg(**{**trio, "coarse": str(copy)}))
    assert same["inputs"] == a["inputs"]  # same content, other path
    shard = next(copy.glob("model-00001-*.safetensors"))
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    assert stage.config_subtree(make_cfg(**{**trio, "coarse": str(copy)}))["inputs"] != a["inputs"]


def test_hand_written_trio_matches_a_real_mistral():
    """The merge tests' state dicts (test_merge_io.TINY shapes) are what transformers builds
    for the same config, so merging them exercises real tensor names and shapes."""
    from transformers import MistralForCausalLM

    keys = ("num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings")
    model = MistralForCausalLM(tiny_mistral_config(**{k: TINY[k] for k in keys}))
    real = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    hand = {k: tuple(v.shape) for k, v in tiny_mistral_state(torch.Generator()).items()}
    assert hand == real


def test_output_never_replaces_the_cache_a_run_dir_or_an_input(trio, tmp_path):
    """Issue 25.1: `merger.output=<paths.cache_dir> merger.overwrite=true` deleted the cache.
    One rule: the output may not equal, contain or sit inside the cache, a run dir or an input;
    overwrite replaces only a previous merge output."""
    cache = tmp_path / "cache"
    (cache / "prepare" / "abc").mkdir(parents=True)
    (cache / "prepare" / "abc" / "DONE").write_text("t")
    (cache / "prepare" / "abc" / "result.json").write_text("{}")
    run = tmp_path / "runs" / "r1"
    (run / ".hydra").mkdir(parents=True)
    mine = tmp_path / "mine"
    (mine / "notes.txt").parent.mkdir()
    (mine / "notes.txt").write_text("precious")

    def cfg(dest):
        root = {"paths": {"cache_dir": str(cache)}}
        return make_cfg(root=root, output=str(dest), overwrite=True, **trio)

    cases = {
        cache: "is paths.cache_dir",
        tmp_path: "contains paths.cache_dir",
        cache / "merge" / "new": "sits inside paths.cache_dir",
        trio["coarse"]: "is merger.coarse",
        Path(trio["base"]) / "sub": "sits inside merger.base",
        run / "fine": "sits inside the run dir",
        run: "exists and is not a previous merge output",
        mine: "exists and is not a previous merge output",
    }
    for dest, why in cases.items():
        with pytest.raises(C2FError, match=re.escape(f"merger.output={dest} {why}")):
            MergeStage().preflight(cfg(dest))
    assert (cache / "prepare" / "abc" / "DONE").is_file() and (mine / "notes.txt").is_file()
    with pytest.raises(C2FError, match="is the run dir"):  # at run time too (copy_model_dir)
        output.copy_model_dir(Path(trio["coarse"]), str(run), True, {"the run dir": run})
    assert (run / ".hydra").is_dir()


def test_nan_in_an_unmerged_instruct_tensor_is_a_named_error(trio, tmp_path):
    """Issue 25.7: tensors copied from instruct unmerged (on_mismatch=keep_instruct) are
    checked for NaN/inf as merged ones are."""
    from safetensors.torch import load_file

    name = "model.layers.0.mlp.up_proj.weight"
    ins, coarse = tmp_path / "instruct", tmp_path / "coarse"
    shutil.copytree(trio["instruct"], ins)
    shutil.copytree(trio["coarse"], coarse)
    sd = load_file(ins / "model.safetensors")
    sd[name][0, 0] = float("nan")
    save_file(sd, ins / "model.safetensors")
    for shard in coarse.glob("*.safetensors"):  # coarse: another shape -> keep_instruct
        part = load_file(shard)
        if name in part:
            part[name] = torch.zeros(48, 32)
            save_file(part, shard)
    cfg = make_cfg(
        on_mismatch="keep_instruct", base=trio["base"], instruct=str(ins), coarse=str(coarse)
    )
    with pytest.raises(C2FError, match=rf"merger.instruct: tensor {name} .* has NaN/inf"):
        run_stage(cfg, tmp_path / "r")
